"""easy2hard: easy-to-hard generalization experiments (Sun et al., NeurIPS 2024)."""

__version__ = "0.1.0"
