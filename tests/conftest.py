import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The shared MATH files live beside the checkout and are never copied into the repo.
MATH_DIR = Path(os.environ.get("EASY2HARD_MATH_DIR", REPO_ROOT.parent / "shared" / "data" / "math"))
PRM800K_EXAMPLES_DIR = MATH_DIR.parent / "prm800k" / "examples"


@pytest.fixture
def math_dir() -> Path:
    if not (MATH_DIR / "train.jsonl").exists() or not (MATH_DIR / "test.jsonl").exists():
        pytest.skip(f"real MATH files not found under {MATH_DIR}")
    return MATH_DIR
