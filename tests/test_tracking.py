"""Live training curves: what `report_to` writes is the train_log.jsonl scalars, read back."""

import importlib.util
import json

import pytest
from test_reliability import policy_dir, run_script, write_jsonl  # noqa: F401 (a fixture)

from conftest import TINY_SHAPE
from easy2hard import modeling, tracking, training

needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard absent")


def test_scalars_are_the_numeric_record_entries():
    record = {"step": 3, "loss": 0.5, "lr": 1e-3, "same_reward_for_all": False, "note": "x", "nan": float("nan")}
    assert tracking.scalars(record) == {"loss": 0.5, "lr": 1e-3, "same_reward_for_all": 0.0}
    assert tracking.flat_config({"a": 1, "b": {"c": [1, 2], "d": "e"}}) == {"a": 1, "b.c": "[1, 2]", "b.d": "e"}


def test_none_and_other_ranks_write_nothing(tmp_path):
    out = tmp_path / "model"
    assert type(tracking.open_tracker("none", str(out), {})) is tracking.Tracker
    assert type(tracking.open_tracker("tensorboard", str(out), {}, rank=1)) is tracking.Tracker
    assert not tracking.run_dir_for(str(out)).exists()
    with pytest.raises(ValueError, match="report_to: 'tensorbord' is not one of none, tensorboard, wandb, mlflow"):
        tracking.open_tracker("tensorbord", str(out), {})


@pytest.mark.parametrize("report_to", ["wandb", "mlflow"])
def test_a_tracker_whose_package_is_missing_says_which(report_to, tmp_path):
    if importlib.util.find_spec(report_to) is not None:
        pytest.skip(f"{report_to} is installed")
    with pytest.raises(ImportError, match=f"pip install {report_to}"):
        tracking.open_tracker(report_to, str(tmp_path / "model"), {})


@needs_tensorboard
def test_tensorboard_curves_are_the_train_log(synthetic_split, synthetic_tokenizer, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows, _ = synthetic_split
    examples = [
        training.sft_example(r["problem"], r["steps"], r["answer"], synthetic_tokenizer, 256) for r in rows[:48]
    ]
    config = training.TrainConfig(
        learning_rate=1e-3,
        epochs=1,
        global_batch_size=8,
        micro_batch_size=8,
        max_length=256,
        warmup_ratio=0.0,
        deepspeed="never",
        seed=0,
        report_to="tensorboard",
    )
    out = str(tmp_path / "models" / "sft")
    model = modeling.build_tiny_llama(synthetic_tokenizer, TINY_SHAPE, seed=0)
    _, history = training.train(
        model, examples, config, synthetic_tokenizer.pad_token_id, tracker=training.tracker_for(config, out)
    )
    events = EventAccumulator(str(tracking.run_dir_for(out)))
    events.Reload()
    assert {"loss", "lr", "tokens", "elapsed_s"} <= set(events.Tags()["scalars"])
    logged = [(event.step, event.value) for event in events.Scalars("loss")]
    assert [step for step, _ in logged] == [record["step"] for record in history] == list(range(1, 7))
    assert [value for _, value in logged] == pytest.approx([record["loss"] for record in history], rel=1e-6)
    assert "config/text_summary" in events.Tags()["tensors"]  # the run's settings, as text


@needs_tensorboard
def test_a_stage_script_writes_its_curves_beside_its_model(policy_dir, tmp_path):
    """train_evaluator.py with report_to: tensorboard (SFT, ReST-EM and DPO go through the same
    training.train; PPO's loop is checked in test_rl)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = [
        {
            "unique_id": f"q{i}",
            "problem": f"What is {i} + 1?",
            "steps": [f"{i} + 1 = {i + 1}."],
            "answer": str(i + 1),
            "labels": [1.0, float(i % 2)],
            "kind": "prm",
        }
        for i in range(8)
    ]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    out = tmp_path / "evaluators" / "prm" / "model"
    params = {
        "train": {
            "learning_rate": 1e-3,
            "epochs": 1,
            "global_batch_size": 4,
            "micro_batch_size": 4,
            "max_length": 128,
            "deepspeed": "never",
            "seed": 0,
            "report_to": "tensorboard",
        },
        "label_tokens": "all",
    }
    result = run_script(
        "train_evaluator.py", "--init", str(policy_dir), "--data", str(data), "--out", str(out), params=params
    )
    assert result.returncode == 0, result.stderr[-2000:]
    events = EventAccumulator(str(tracking.run_dir_for(str(out))))
    events.Reload()
    history = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([r["loss"] for r in history], rel=1e-6)


def test_wandb_writes_an_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = str(tmp_path / "model")
    tracker = tracking.open_tracker("wandb", out, {"learning_rate": 1e-3})
    for step in (1, 2):
        tracker.log({"step": step, "loss": 1.0 / step})
    tracker.close()
    assert list(tracking.run_dir_for(out).glob("wandb/offline-run-*/run-*.wandb"))  # no network needed


def test_mlflow_metrics_read_back(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("alembic")  # mlflow-skinny has no SQLite store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = str(tmp_path / "model")
    tracker = tracking.open_tracker("mlflow", out, {"learning_rate": 1e-3, "ppo": {"steps": 2}})
    for step in (1, 2, 3):
        tracker.log({"step": step, "loss": 1.0 / step})
    tracker.close()
    mlflow.set_tracking_uri(f"sqlite:///{(tracking.run_dir_for(out) / 'mlflow.db').resolve()}")
    run = mlflow.search_runs(experiment_names=["easy2hard"]).iloc[0]
    history = mlflow.tracking.MlflowClient().get_metric_history(run["run_id"], "loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx([1.0, 0.5, 1 / 3])
    assert run["params.ppo.steps"] == "2"
