"""Live training curves: the scalars of each train_log.jsonl record, sent as the step ends to
TensorBoard, Weights & Biases or MLflow (`report_to` of a stage's training section; `none` by
default). Rank 0 only. Each run writes beside its model, in `<model folder>.tracking/`, as the
checkpoints go to `<model folder>.checkpoints/`.

W&B runs offline unless WANDB_MODE says otherwise (`wandb sync` uploads later); MLflow writes to
`<run>/mlflow.db` (SQLite) unless MLFLOW_TRACKING_URI points at a server. TensorBoard is in the locked
environment; wandb and mlflow are installed by whoever wants them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def scalars(record: dict) -> dict[str, float]:
    """The numeric entries of a train_log record (booleans as 0/1), without the step itself."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "step" and isinstance(value, (int, float)) and value == value
    }


def flat_config(config: dict) -> dict[str, str | int | float | bool]:
    """Nested settings as `a.b` keys with plain values (what the trackers' parameter tables take)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in flat_config(value).items()})
        else:
            flat[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    return flat


class Tracker:
    """`report_to: none`: logs nothing."""

    def log(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(Tracker):
    def __init__(self, run_dir: Path, run_name: str, config: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir))
        self.writer.add_text("config", f"```\n{json.dumps(config, indent=2, default=str)}\n```")

    def log(self, record: dict) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, record["step"])
        self.writer.flush()  # a curve to watch while the job runs, not at its end

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, run_dir: Path, run_name: str, config: dict):
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "easy2hard"),
            name=run_name,
            dir=str(run_dir),
            config=config,
            mode=os.environ.get("WANDB_MODE", "offline"),
            reinit="finish_previous",
        )

    def log(self, record: dict) -> None:
        self.run.log(scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


class MlflowTracker(Tracker):
    def __init__(self, run_dir: Path, run_name: str, config: dict):
        import mlflow

        self.mlflow = mlflow
        # MLflow 3 refuses its old file store: a SQLite database beside the model by default
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"))
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "easy2hard"))
        mlflow.start_run(run_name=run_name)
        mlflow.log_params(flat_config(config))

    def log(self, record: dict) -> None:
        self.mlflow.log_metrics(scalars(record), step=record["step"])

    def close(self) -> None:
        self.mlflow.end_run()


TRACKERS = {"none": Tracker, "tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker}


def run_dir_for(output_dir: str) -> Path:
    return Path(f"{str(output_dir).rstrip('/')}.tracking")


def open_tracker(report_to: str, output_dir: str, config: dict, rank: int = 0) -> Tracker:
    """The tracker of a training run writing `output_dir` (the tracker package is named after
    `report_to`); a plain Tracker on ranks > 0 or for `none`."""
    if report_to not in TRACKERS:
        raise ValueError(f"report_to: {report_to!r} is not one of {', '.join(TRACKERS)}")
    if report_to == "none" or rank != 0:
        return Tracker()
    run_dir = run_dir_for(output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return TRACKERS[report_to](run_dir, str(output_dir), config)
    except ImportError as error:
        raise ImportError(
            f"report_to: {report_to} needs the package {report_to!r} (pip install {report_to}): {error}"
        ) from error
