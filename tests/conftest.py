import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# The shared MATH files live beside the checkout and are never copied into the repo.
MATH_DIR = Path(os.environ.get("EASY2HARD_MATH_DIR", REPO_ROOT.parent / "shared" / "data" / "math"))
PRM800K_EXAMPLES_DIR = MATH_DIR.parent / "prm800k" / "examples"


@pytest.fixture
def math_dir() -> Path:
    if not (MATH_DIR / "train.jsonl").exists() or not (MATH_DIR / "test.jsonl").exists():
        pytest.skip(f"real MATH files not found under {MATH_DIR}")
    return MATH_DIR


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """The test models are tiny: one thread is fastest, and two oversubscribe a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
