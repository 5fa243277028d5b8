"""PPO checkpoint selection WITH HARD VALIDATION GOLD (the authors' choice; an explicitly labelled
option, not an easy-to-hard result): the greedy validation accuracy, on every level, of each policy
snapshot of a PPO round and of its final policy; the best one is copied out (ties: the later step)
and reported as the policy `ppo_r<k>_gold_selected`."""

import csv
import json
import shutil
from pathlib import Path

from easy2hard import cli, ppo, sampling, vllm_backend
from easy2hard.grading import GradingStats
from easy2hard.io import atomic_output, read_jsonl
from easy2hard.judge import judge_samples


def greedy_accuracy(model_dir, questions, gold, params) -> float:
    config = sampling.SamplingConfig(**{**params["sampling"], "greedy": True, "num_samples": 1})
    model, tokenizer = sampling.load_policy(model_dir, config)
    samples = list(sampling.sample_solutions(model, tokenizer, questions, config, progress=False, model_path=model_dir))
    vllm_backend.close_all()  # one candidate's vLLM engine at a time (each holds its weights and KV cache)
    grading = params["grading"]
    judged = judge_samples(
        samples, gold, grading["timeout"], grading["workers"], mode=grading["mode"], stats=GradingStats()
    )
    return sum(bool(row["correct"]) for row in judged) / len(judged)


if __name__ == "__main__":
    p = cli.parser(__doc__)
    p.add_argument("--final", required=True, help="the round's policy (its last step)")
    p.add_argument("--snapshots", required=True, help="the round's policy snapshots (step_NNNNNN folders)")
    p.add_argument("--questions", required=True, help="validation questions")
    p.add_argument("--gold", required=True, help="validation gold answers of every level")
    p.add_argument("--out", required=True)
    p.add_argument("--table", required=True, help="CSV: step, folder, greedy validation accuracy, chosen")
    args = p.parse_args()
    cli.setup(args)
    questions = read_jsonl(args.questions, required=("unique_id", "problem", "level"))
    gold = {row["unique_id"]: row["answer"] for row in read_jsonl(args.gold, required=("unique_id", "answer"))}
    manifest = json.loads((Path(args.snapshots) / "snapshots.json").read_text())
    folders = {step: f"{args.snapshots}/step_{step:06d}" for step in manifest["steps"]}
    folders[manifest["final_step"]] = args.final
    accuracies = {
        step: greedy_accuracy(folder, questions, gold, args.params) for step, folder in sorted(folders.items())
    }
    chosen = ppo.best_checkpoint(accuracies)
    with atomic_output(args.out, directory=True) as tmp:
        shutil.copytree(folders[chosen], tmp, dirs_exist_ok=True)
    with atomic_output(args.table) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["step", "folder", "valid_greedy_accuracy", "chosen"])
        for step, accuracy in accuracies.items():
            writer.writerow([step, folders[step], f"{accuracy:.4f}", step == chosen])
    print(
        f"chosen: step {chosen} of {sorted(accuracies)} (greedy validation accuracy {accuracies[chosen]:.3f}, "
        "selected with hard validation gold)"
    )
    cli.finish(args)
