"""Training curves of the RL policies: validation accuracy per round (round 0 = SFT), and the
per-step logs of each round (PPO reward and KL, DPO implicit-reward accuracy, losses)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from easy2hard import cli  # noqa: E402
from easy2hard.io import atomic_output, read_jsonl  # noqa: E402

ROUND_COLUMNS = ["algorithm", "round", "generator", "decoding", "levels", "accuracy", "num_samples", "num_problems"]


def accuracy_rows(rows: list[dict], easy_levels) -> list[dict]:
    """Mean per-sample accuracy (pass@1 for sampled solutions) on easy, hard and all problems."""
    easy_levels, out = set(easy_levels), []
    for group, keep in [
        ("easy", lambda r: r["level"] in easy_levels),
        ("hard", lambda r: r["level"] not in easy_levels),
        ("all", lambda r: True),
    ]:
        chosen = [r for r in rows if keep(r)]
        out.append(
            {
                "levels": group,
                "accuracy": 100 * sum(bool(r["correct"]) for r in chosen) / len(chosen) if chosen else float("nan"),
                "num_samples": len(chosen),
                "num_problems": len({r["unique_id"] for r in chosen}),
            }
        )
    return out


def round_table(evals: dict[tuple[str, int], dict[str, str]], easy_levels) -> pd.DataFrame:
    """evals: (algorithm, round) -> {decoding: eval file}; round 0 of every algorithm is SFT."""
    records = []
    for (algorithm, round_), files in sorted(evals.items()):
        generator = "sft" if round_ == 0 else f"{algorithm}_r{round_}"
        for decoding, path in sorted(files.items()):
            rows = read_jsonl(path, required=("unique_id", "level", "correct"))
            records += [
                {"algorithm": algorithm, "round": round_, "generator": generator, "decoding": decoding, **row}
                for row in accuracy_rows(rows, easy_levels)
            ]
    return pd.DataFrame.from_records(records, columns=ROUND_COLUMNS)


def load_logs(models: dict[tuple[str, int], str]) -> pd.DataFrame:
    """Every round's train_log.jsonl, with the algorithm, the round and a step count across rounds."""
    frames = []
    for (algorithm, round_), folder in sorted(models.items()):
        log = pd.DataFrame(read_jsonl(Path(folder) / "train_log.jsonl", required=("step",)))
        frames.append(log.assign(algorithm=algorithm, round=round_))
    if not frames:
        return pd.DataFrame(columns=["algorithm", "round", "step", "loss", "global_step"])
    logs = pd.concat(frames, ignore_index=True)
    logs["global_step"] = logs.groupby("algorithm").cumcount() + 1
    return logs


PANELS = [  # (title, algorithm, log column); a panel without data says so
    ("PPO: reward per rollout (no KL)", "ppo", "reward"),
    ("PPO: KL to the reference (per solution)", "ppo", "kl"),
    ("PPO: easy train accuracy of rollouts", "ppo", "easy_accuracy"),
    ("DPO: implicit reward accuracy", "dpo", "reward_accuracy"),
    ("DPO: implicit reward margin", "dpo", "reward_margin"),
    ("ReST-EM: SFT loss on the kept set", "rest_em", "loss"),
]
COLORS = {"rest_em": "tab:blue", "dpo": "tab:orange", "ppo": "tab:green"}


def plot(rounds: pd.DataFrame, logs: pd.DataFrame, path: str | os.PathLike) -> None:
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5), constrained_layout=True)
    accuracy_axes, step_axes = axes[0, :2], [*axes[0, 2:], *axes[1, :]]
    for ax, decoding in zip(accuracy_axes, ("greedy", "sampled")):
        data = rounds[(rounds["decoding"] == decoding)]
        for (algorithm, group), rows in data.groupby(["algorithm", "levels"]):
            style = {"easy": ":", "hard": "--", "all": "-"}[group]
            ax.plot(
                rows["round"],
                rows["accuracy"],
                style,
                marker="o",
                color=COLORS.get(algorithm),
                label=f"{algorithm} ({group})",
            )
        ax.set(
            title=f"Validation accuracy per round ({decoding}; round 0 = SFT)", xlabel="round", ylabel="accuracy (%)"
        )
        ax.xaxis.get_major_locator().set_params(integer=True)
        if not data.empty:
            ax.legend(fontsize=7)
    for ax, (title, algorithm, column) in zip(step_axes, PANELS):
        rows = logs[logs["algorithm"] == algorithm] if not logs.empty else logs
        ax.set(title=title, xlabel="optimizer step" if algorithm != "ppo" else "PPO step")
        if rows.empty or column not in rows or rows[column].isna().all():
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="0.5")
            continue
        ax.plot(rows["global_step"], rows[column], color=COLORS[algorithm])
        for boundary in rows.groupby("round")["global_step"].min().iloc[1:]:
            ax.axvline(boundary - 0.5, color="0.7", linewidth=0.8)  # round boundaries
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write(rounds: pd.DataFrame, logs: pd.DataFrame, csv_path, png_path) -> None:
    with atomic_output(csv_path) as tmp:
        rounds.to_csv(tmp, index=False, float_format="%.4f")
    plot(rounds, logs, png_path)


def parse_pairs(items: list[str], option: str) -> dict[tuple[str, int], str]:
    """`option`'s ALGORITHM:ROUND=PATH arguments as {(algorithm, round): path}."""
    out = {}
    for key, path in cli.key_paths(items, option, "ALGORITHM:ROUND=PATH").items():
        algorithm, sep, round_ = key.partition(":")
        if not sep or not algorithm or not round_.isdigit():
            raise SystemExit(f"{option}: expected ALGORITHM:ROUND=PATH, got {key + '=' + path!r}")
        out[(algorithm, int(round_))] = path
    return out


def summary(rounds: pd.DataFrame) -> str:
    table = rounds[(rounds["levels"] != "all")].pivot_table(
        index=["algorithm", "round", "decoding"], columns="levels", values="accuracy"
    )
    return json.dumps(table.round(1).reset_index().to_dict(orient="records"))
