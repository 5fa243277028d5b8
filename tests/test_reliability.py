"""Reliability: a killed sampling job resumes from its last finished shard; a crashed PPO run
resumes to the same policy; stage scripts stop on bad input with the file and line and leave no
output; every stage records its provenance; the grader answers random strings without raising."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT, TINY_SHAPE
from easy2hard import evaluator, modeling, ppo, provenance, sampling, training
from easy2hard.grading import extract_answer, grade_many, is_equivalent

SCRIPTS = REPO_ROOT / "workflow" / "scripts"
ENV = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "workflow"), OMP_NUM_THREADS="1")


def run_script(name: str, *args: str, params: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPTS / name), "--params", json.dumps(params or {}), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENV)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def policy_dir(synthetic_tokenizer, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("policy")
    modeling.build_tiny_llama(synthetic_tokenizer, TINY_SHAPE, 0).save_pretrained(folder)
    synthetic_tokenizer.save_pretrained(folder)
    return folder


# --- sampling resumes from its last shard ----------------------------------------------------------

SAMPLING = {
    "sampling": {
        "num_samples": 8,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 1.0,
        "max_new_tokens": 64,
        "batch_size": 64,
        "seed": 3,
        "engine": "hf",
    },
    "shard_questions": 3,
}


def test_a_killed_sampling_job_resumes_from_its_last_shard(policy_dir, synthetic_split, tmp_path):
    rows, _ = synthetic_split
    questions = write_jsonl(tmp_path / "questions.jsonl", rows[:30])  # 10 shards
    reference = tmp_path / "reference.jsonl"
    done = run_script(
        "sample.py",
        "--threads",
        "1",
        "--model",
        str(policy_dir),
        "--questions",
        str(questions),
        "--out",
        str(reference),
        params=SAMPLING,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    out = tmp_path / "killed.jsonl"
    shards = Path(f"{out}.shards")
    command = [
        sys.executable,
        str(SCRIPTS / "sample.py"),
        "--params",
        json.dumps(SAMPLING),
        "--threads",
        "1",
        "--model",
        str(policy_dir),
        "--questions",
        str(questions),
        "--out",
        str(out),
    ]
    job = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (shards / "shard-00002.jsonl").exists() and time.time() < deadline and job.poll() is None:
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the job finished before it could be killed"
    finished = sorted(p.name for p in shards.glob("shard-*.jsonl"))
    assert 3 <= len(finished) < 10 and not out.exists()  # killed mid-run: no output, some shards

    resumed = run_script(
        "sample.py",
        "--threads",
        "1",
        "--model",
        str(policy_dir),
        "--questions",
        str(questions),
        "--out",
        str(out),
        params=SAMPLING,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{len(finished)} of 10 shards already sampled" in resumed.stderr
    assert out.read_text() == reference.read_text()  # the same samples as the uninterrupted run
    assert not shards.exists()
    # The provenance counts the back end of every shard, the ones sampled before the kill too.
    assert (
        provenance.read(out)["sampling"]
        == provenance.read(reference)["sampling"]
        == {"mode": "hf", "backend": "hf", "prompts": {"hf": 30}, "fallbacks": [], "unexpected_fallback": False}
    )


def test_shards_of_another_model_are_not_reused(policy_dir, synthetic_tokenizer, synthetic_split, tmp_path):
    rows, _ = synthetic_split
    model, tokenizer = modeling.load_model(str(policy_dir))
    config = sampling.SamplingConfig(num_samples=2, max_new_tokens=16, batch_size=8, engine="hf")
    out = str(tmp_path / "samples.jsonl")
    stale = Path(f"{out}.shards")
    stale.mkdir()
    (stale / "fingerprint").write_text("another model")
    write_jsonl(stale / "shard-00000.jsonl", [{"unique_id": "stale"}])
    count, _ = sampling.sample_in_shards(model, tokenizer, rows[:4], config, out, 2, provenance.fingerprint(policy_dir))
    written = [json.loads(line) for line in Path(out).read_text().splitlines()]
    assert count == len(written) == 8 and "stale" not in {row["unique_id"] for row in written}


# --- PPO resumes from its checkpoint --------------------------------------------------------------


def ppo_trainer(policy_dir, rows, crash_at=None):
    policy, tokenizer = modeling.load_model(str(policy_dir))
    reference, _ = modeling.load_model(str(policy_dir))
    torch.manual_seed(0)
    value, _ = evaluator.load_backbone(str(policy_dir))
    reward_model, _ = evaluator.load_backbone(str(policy_dir))
    easy = [r for r in rows if r["level"] <= 3][:6]
    train = dict(
        learning_rate=1e-3,
        epochs=1,
        global_batch_size=4,
        micro_batch_size=2,
        max_length=256,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        deepspeed="never",
        seed=0,
        checkpoint_every=2,
    )
    trainer = ppo.PPOTrainer(
        ppo.Models(policy, value, reference, reward_model, tokenizer),
        easy,
        {r["unique_id"]: r["answer"] for r in easy},
        ppo.PPOConfig(steps=4, prompts_per_step=4),
        training.TrainConfig(**train),
        training.TrainConfig(**train),
        sampling.SamplingConfig(max_new_tokens=16, batch_size=16, engine="hf"),
        {"mode": "lenient", "timeout": 5.0, "workers": 1},
        8,
    )
    if crash_at is not None:
        update = trainer.update

        def crashing(examples, step):
            if step == crash_at:
                raise RuntimeError("simulated crash")
            return update(examples, step)

        trainer.update = crashing
    return trainer


def test_a_crashed_ppo_run_resumes_to_the_same_policy(policy_dir, synthetic_split, tmp_path):
    rows, _ = synthetic_split
    reference_policy, reference_value, reference_history = ppo_trainer(policy_dir, rows).train(None, {})
    checkpoints = str(tmp_path / "ppo.checkpoints")
    with pytest.raises(RuntimeError, match="simulated crash"):
        ppo_trainer(policy_dir, rows, crash_at=4).train(checkpoints, {})
    assert training.latest_checkpoint(f"{checkpoints}/policy") == "step-2"
    assert training.latest_checkpoint(f"{checkpoints}/value") == "step-2"
    policy, value, history = ppo_trainer(policy_dir, rows).train(checkpoints, {})
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    assert [r["reward"] for r in history] == pytest.approx([r["reward"] for r in reference_history], abs=1e-6)
    for resumed, uninterrupted in [(policy, reference_policy), (value, reference_value)]:
        for a, b in zip(resumed.parameters(), uninterrupted.parameters()):
            assert torch.allclose(a, b, atol=1e-5)


def test_ppo_checkpoints_of_different_steps_start_over(policy_dir, synthetic_split, tmp_path, caplog):
    """Killed between saving the value model and the policy: no consistent state, so start over
    (not stuck on an error at every re-run)."""
    rows, _ = synthetic_split
    checkpoints = tmp_path / "ppo.checkpoints"
    with pytest.raises(RuntimeError, match="simulated crash"):
        ppo_trainer(policy_dir, rows, crash_at=4).train(str(checkpoints), {})
    (checkpoints / "value" / "complete").write_text("step-4")  # as if the value model had moved on
    with caplog.at_level("INFO"):
        _, _, history = ppo_trainer(policy_dir, rows).train(str(checkpoints), {})
    assert "starting over" in caplog.text and "resumed from" not in caplog.text
    assert [r["step"] for r in history] == [1, 2, 3, 4]


# --- bad input stops a stage with the file and line, and leaves nothing -----------------------------


def test_bad_inputs_name_the_file_and_line_and_leave_no_output(policy_dir, tmp_path):
    good_sample = {"unique_id": "q1", "level": 1, "sample_index": 0, "completion": "1 + 1 = 2.\n\n# Answer\n\n2"}
    cases = {
        # name: (script, arguments before --out, bad file, its lines, expected message)
        "malformed JSON": (
            "grade_train.py",
            ["--samples", "{bad}", "--answers", "{good_easy}"],
            [json.dumps(good_sample), '{"unique_id": "q2", '],
            ":2: malformed JSON",
        ),
        "not UTF-8": ("evaluate.py", ["--samples", "{bad}", "--gold", "{good_gold}"], None, ":1: not valid UTF-8"),
        "missing field": (
            "sample.py",
            ["--model", str(policy_dir), "--questions", "{bad}"],
            [{"unique_id": "q1", "level": 1}],
            ":1: missing field(s) problem",
        ),
        "not an object": (
            "score.py",
            ["--evaluator", str(policy_dir), "--samples", "{bad}", "--questions", "{good_questions}"],
            ["[1, 2]"],
            ":1: expected a JSON object",
        ),
        "non-finite score": (
            "rl_data.py",
            [
                "--algorithm",
                "dpo",
                "--graded",
                "{good_graded}",
                "--scores",
                "{bad}",
                "--questions",
                "{good_questions}",
                "--stats",
                "{stats}",
            ],
            [{"unique_id": "q1", "sample_index": 0, "step_scores": ["nan"]}],
            "step_scores must be a list of finite numbers",
        ),
        "missing scores": (
            "rl_data.py",
            [
                "--algorithm",
                "rest_em",
                "--graded",
                "{good_graded}",
                "--scores",
                "{bad}",
                "--questions",
                "{good_questions}",
                "--stats",
                "{stats}",
            ],
            [],
            "no scores for 1 of the 1 samples",
        ),
    }
    params = {
        "grade_train.py": {"mode": "lenient", "timeout": 5.0, "workers": 1},
        "evaluate.py": {"mode": "lenient", "timeout": 5.0, "workers": 1},
        "sample.py": SAMPLING,
        "score.py": {"batch_size": 4, "max_tokens": 4096},
        "rl_data.py": {"easy_levels": [1, 2, 3], "selection": {"aggregation": "min"}},
    }
    good = {
        "good_easy": write_jsonl(tmp_path / "easy.jsonl", [{"unique_id": "q1", "answer": "2"}]),
        "good_gold": write_jsonl(tmp_path / "gold.jsonl", [{"unique_id": "q1", "answer": "2"}]),
        "good_questions": write_jsonl(
            tmp_path / "questions.jsonl", [{"unique_id": "q1", "problem": "1 + 1", "level": 1}]
        ),
        "good_graded": write_jsonl(tmp_path / "graded.jsonl", [{**good_sample, "correct": True, "finished": True}]),
    }
    for name, (script, arguments, lines, message) in cases.items():
        bad = tmp_path / f"bad-{name.replace(' ', '-')}.jsonl"
        if lines is None:
            bad.write_bytes(b'{"unique_id": "q\xff"}\n')
        else:
            write_jsonl(bad, lines)
        out, stats = tmp_path / f"out-{bad.stem}.jsonl", tmp_path / f"stats-{bad.stem}.json"
        names = {"bad": str(bad), "stats": str(stats), **{k: str(v) for k, v in good.items()}}
        result = run_script(script, *[a.format(**names) for a in arguments], "--out", str(out), params=params[script])
        assert result.returncode != 0, name
        assert str(bad) in result.stderr and message in result.stderr, (name, result.stderr[-1500:])
        leftovers = [p.name for p in tmp_path.iterdir() if bad.stem in p.name and p != bad]
        assert leftovers == [], (name, leftovers)  # no output, no temporary file, no provenance


# --- provenance -------------------------------------------------------------------------------------


def test_provenance_beside_a_file_and_inside_a_folder(tmp_path):
    data = write_jsonl(tmp_path / "x.jsonl", [{"a": 1}])
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0" * 10)
    record = provenance.record({"seed": 7, "learning_rate": 0.1}, {"data": [str(data)]})
    assert provenance.write(data, record) == tmp_path / "x.jsonl.provenance.json"
    assert provenance.write(folder, record) == folder / "provenance.json"
    saved = json.loads((tmp_path / "x.jsonl.provenance.json").read_text())
    assert saved["config"] == {"seed": 7, "learning_rate": 0.1}
    assert saved["inputs"]["data"][str(data)]["sha256"] == provenance.fingerprint(data)["sha256"]
    assert saved["libraries"]["torch"] and saved["command"]
    assert saved["code_version"] and saved["grader_version"]
    # A folder's fingerprint leaves its own provenance out, so recording it changes nothing.
    assert list(provenance.fingerprint(folder)["files"]) == ["weights.bin"]
    assert provenance.read(data) == saved and provenance.read(tmp_path / "no-such.jsonl") is None


def test_end_of_run_check_finds_fallbacks_on_models_the_engine_should_run(tmp_path):
    """What the Snakefile's onsuccess / onerror hook prints: outputs (files and model folders)
    sampled by generate although the engine is meant to run the model; by-design fallbacks and
    outputs without sampling are not reported."""

    def sampled_by(fallbacks):
        return {"sampling": {"mode": "auto", "backend": "hf", "prompts": {"hf": 1}, "fallbacks": fallbacks}}

    (tmp_path / "samples").mkdir()
    samples = write_jsonl(tmp_path / "samples" / "test.jsonl", [])
    provenance.write(samples, sampled_by([{"reason": "engine failed: RuntimeError()", "expected": False}]))
    ppo = tmp_path / "models" / "ppo_r1"
    ppo.mkdir(parents=True)
    provenance.write(
        ppo,
        sampled_by(
            [
                {"reason": "its forward takes no cache", "expected": False},
                {"reason": "sliding window", "expected": True},
            ]
        ),
    )
    by_design = write_jsonl(tmp_path / "samples" / "valid.jsonl", [])
    provenance.write(by_design, sampled_by([{"reason": "sliding window", "expected": True}]))
    provenance.write(write_jsonl(tmp_path / "data.jsonl", []), {"config": {}})
    (tmp_path / "broken.provenance.json").write_text("{")
    assert provenance.unexpected_sampling_fallbacks(tmp_path) == {
        str(ppo / "provenance.json"): ["its forward takes no cache"],
        str(tmp_path / "samples" / "test.jsonl.provenance.json"): ["engine failed: RuntimeError()"],
    }


# --- the grader never raises on random input -----------------------------------------------------

LATEX_ALPHABET = st.sampled_from(
    list("0123456789+-*/^_{}()[]\\,.= xyzabc") + ["\\frac", "\\sqrt", "\\pi", "\\boxed{", "^{", "!", "é", "∞", "\x00"]
)
latexish = st.lists(LATEX_ALPHABET, max_size=40).map("".join)


@pytest.mark.timeout(300)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pred=st.one_of(latexish, st.text(max_size=60)), gold=st.one_of(latexish, st.text(max_size=20)))
def test_is_equivalent_never_raises_on_random_strings(pred, gold):
    assert isinstance(is_equivalent(pred, gold, timeout=2.0), bool)
    extracted = extract_answer(f"{pred}\n\n# Answer\n\n{gold}")
    assert extracted is None or isinstance(extracted, str)


@pytest.mark.timeout(120)
def test_grade_many_runs_pathological_pairs_in_parallel():
    pairs = [
        ("10^{10^{10}}", "1"),
        ("100000!", "2"),
        ("{" * 3000 + "}" * 3000, "3"),
        ("x" * 10000, "4"),
        ("\\frac{1}{2}", "0.5"),
        ("∞", "\\infty"),
    ]
    verdicts = grade_many(pairs, timeout=1.0, workers=2)  # pytest-timeout bounds the whole call
    assert verdicts[:4] == [False] * 4 and verdicts[4] is True
    assert all(isinstance(v, bool) for v in verdicts)


# --- a killed Snakemake run resumes training where it stopped ------------------------------------


def test_a_killed_workflow_resumes_sft_from_its_checkpoint(tmp_path):
    """SIGKILL Snakemake and its SFT job mid-training; `--unlock`, then `--rerun-incomplete` resumes
    from the trainer's checkpoint (the model folder only ever appears complete)."""
    override = tmp_path / "checkpoints.yaml"
    override.write_text("sft:\n  checkpoint_every: 10\n  epochs: 30\n")
    base = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(REPO_ROOT / "tests/configs/tiny.yaml"),
        str(override),
        "--cores",
        "1",
    ]
    job = subprocess.Popen(
        [*base, "results/models/sft"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    marker = tmp_path / "results/models/sft.checkpoints/complete"
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and job.poll() is None:
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGKILL)  # Snakemake and the training process alike
    job.wait()
    assert marker.exists() and not (tmp_path / "results/models/sft").exists()
    killed_at = marker.read_text().strip()
    assert subprocess.run([*base, "--unlock"], capture_output=True, timeout=120).returncode == 0
    rerun = subprocess.run(
        [*base, "--rerun-incomplete", "results/models/sft"], capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    log = (tmp_path / "results/logs/sft.log").read_text()
    assert f"resumed from results/models/sft.checkpoints/{killed_at}" in log
    history = [json.loads(line) for line in (tmp_path / "results/models/sft/train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history] == list(range(1, len(history) + 1))  # the killed run's steps kept, none redone
    assert not (tmp_path / "results/models/sft.checkpoints").exists()
