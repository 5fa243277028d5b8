import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from easy2hard import formats, modeling, synthetic, training

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


# The tiny Llama every model test builds (random init; a few 10k parameters).
TINY_SHAPE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 2,
    "num_heads": 2,
    "max_position_embeddings": 256,
}


@pytest.fixture(scope="session")
def synthetic_split() -> tuple[list[dict], list[dict]]:
    """200 synthetic train problems (with reference steps) and 20 test problems."""
    train, test = synthetic.generate_splits(200, 20, 0)
    return [{**r, "steps": formats.split_reference_solution(r["solution"])} for r in train], test


@pytest.fixture(scope="session")
def synthetic_tokenizer(synthetic_split):
    """The offline byte-level BPE trained on the train problems in the solution format."""
    rows, _ = synthetic_split
    texts = [formats.format_prompt(r["problem"]) + formats.format_solution(r["steps"], r["answer"]) for r in rows]
    return modeling.train_tokenizer(texts, 400)


@pytest.fixture(scope="session")
def trained_model(synthetic_split, synthetic_tokenizer):
    """The tiny Llama briefly fine-tuned (150 steps, ~2 s) on the synthetic train problems, so its
    greedy continuations depend on the prompt and often end in EOS (a random model emits the same
    filler for every prompt). Shared by the sampling and engine tests: do not train it further."""
    rows, _ = synthetic_split
    examples = [training.sft_example(r["problem"], r["steps"], r["answer"], synthetic_tokenizer, 256) for r in rows]
    config = training.TrainConfig(
        learning_rate=5e-3,
        epochs=150 * 8 / len(examples),
        global_batch_size=8,
        micro_batch_size=8,
        max_length=768,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        deepspeed="never",
        seed=0,
    )
    model = modeling.build_tiny_llama(synthetic_tokenizer, TINY_SHAPE, seed=0)
    module, _ = training.train(model, examples, config, synthetic_tokenizer.pad_token_id)
    return module.eval()


# DeepSpeed runs get a process of their own (it initialises torch.distributed once per process).
DEEPSPEED_PRELUDE = """
import sys, torch
sys.path.insert(0, {root!r})
from easy2hard import evaluator, formats, modeling, synthetic, training
torch.set_num_threads(1)
train, _ = synthetic.generate_splits(40, 10, 0)
tok = modeling.train_tokenizer([formats.format_prompt(r["problem"]) + r["solution"] for r in train], 400)
ex = [training.sft_example(r["problem"], formats.split_reference_solution(r["solution"]), r["answer"], tok, 512)
      for r in train]
"""
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def run_deepspeed_script(body: str, folder: Path, *args: str, **fields) -> subprocess.CompletedProcess:
    """DEEPSPEED_PRELUDE + `body` (str.format'ed with `fields`), run as one plain process (no launcher
    variables: rank 0 of 1) with `args`; the script is written into `folder`."""
    script = folder / "deepspeed_run.py"
    script.write_text((DEEPSPEED_PRELUDE + body).format(root=str(REPO_ROOT / "workflow"), **fields))
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600, env=env)
