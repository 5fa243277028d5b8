"""Sampling N solutions per question (batched, seeded, left-padded).

Prompts are tokenized exactly as in SFT -- BOS, the prompt, then (for rollouts from a partial
solution) the solution prefix, each tokenized on its own -- so the policy continues from the
token boundary it was trained on.

Two back ends produce the same output dicts from the same distribution; ``SamplingConfig.engine``
picks one:

* ``hf``: HF ``generate`` on batches of ``batch_size // N`` prompts with ``num_return_sequences=N``;
  each batch is seeded from (seed, index of its first prompt), so a run is reproducible for a
  fixed batch layout.
* ``engine``: ``easy2hard.engine.SamplingEngine`` with ``(batch_size // N) * N`` slots: each prompt is
  prefilled once and its KV cache shared by its N samples, finished rows are refilled from the
  queue, and on CUDA the decode step is compiled and replayed as a CUDA graph. One generator
  seeded from ``seed`` drives the whole run (reproducible for fixed prompts, N, slots, device).
* ``auto`` (default): ``engine`` when the model is supported (on CPU too: refilling finished rows
  makes it 1.6x faster than the best ``generate`` batch size on the offline default), ``hf``
  otherwise. ``$EASY2HARD_SAMPLING_ENGINE`` sets the mode when the config leaves it unset.

Which back end sampled what is never silent: ``generate`` counts prompts per back end and every
fallback in a ``BackendUsage``, which the stages log and write into the provenance of their
outputs (``sampling`` key) and the report copies into its settings. A fallback on a model the
engine does not reproduce by design (sliding window, logits processors, ...) is logged; one on a
model it is meant to run (an engine failure, a transformers API it does not know) is a warning,
repeated at the end of the Snakemake run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, StoppingCriteria, StoppingCriteriaList

from easy2hard import engine as sampling_engine
from easy2hard import formats, modeling, vllm_backend
from easy2hard.io import atomic_output, write_json, write_jsonl

log = logging.getLogger(__name__)

ENGINE_MODES = ("auto", "engine", "hf", "vllm")


@dataclass
class SamplingConfig:
    """The `sampling` section of the config; config.yaml lists these defaults (tests/test_config_homes.py)."""

    num_samples: int = 32  # config.yaml: one count per split (sampling.num_samples.<split>)
    temperature: float = 0.7
    top_k: int = 20
    top_p: float = 1.0
    max_new_tokens: int = 96
    batch_size: int = 256  # sequences per generate call (engine: KV-cache slots)
    seed: int = 0
    greedy: bool = False
    engine: str | None = None  # auto | engine | hf | vllm; None: $EASY2HARD_SAMPLING_ENGINE, else auto
    vllm: dict | None = None  # vllm_backend.VLLMOptions (sampling.vllm + compute.inference_gpus)


def encode_prompt(tokenizer, problem: str, solution_prefix: str = "", context: str = "") -> list[int]:
    """BOS (+ in-context exemplars) + prompt (+ partial solution), tokenized piecewise like the SFT
    examples."""
    ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    if context:
        ids += tokenizer(context, add_special_tokens=False)["input_ids"]
    ids += tokenizer(formats.format_prompt(problem), add_special_tokens=False)["input_ids"]
    if solution_prefix:
        ids += tokenizer(solution_prefix, add_special_tokens=False)["input_ids"]
    return ids


def _left_pad(sequences: list[list[int]], pad_id: int, device) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention_mask[row, width - len(ids) :] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


@dataclass
class BackendUsage:
    """Which back end sampled how many prompts, and why any fell back to ``generate``."""

    mode: str = "auto"
    prompts: dict[str, int] = field(default_factory=dict)  # "engine" / "hf" -> prompts sampled
    fallbacks: list[dict] = field(default_factory=list)  # {"reason", "expected"}, each reason once

    def count(self, backend: str, prompts: int = 1) -> None:
        self.prompts[backend] = self.prompts.get(backend, 0) + prompts

    def fall_back(self, reason: str, expected: bool) -> None:
        """Record (and announce) that ``auto`` samples with ``generate``: a log line where the engine
        does not reproduce the model by design, a warning where it should have run."""
        if not any(f["reason"] == reason for f in self.fallbacks):
            self.fallbacks.append({"reason": reason, "expected": expected})
        if expected:
            log.info("sampling with generate: the engine does not reproduce this model (%s)", reason)
        else:
            warnings.warn(
                f"sampling engine not used ({reason}); falling back to generate, although the "
                "engine is meant to run this model (sampling is slower than it should be)",
                stacklevel=3,
            )

    @property
    def unexpected_fallback(self) -> bool:
        return any(not f["expected"] for f in self.fallbacks)

    def merge(self, other: "BackendUsage") -> None:
        for backend, prompts in other.prompts.items():
            self.count(backend, prompts)
        self.fallbacks += [f for f in other.fallbacks if f not in self.fallbacks]

    def as_record(self) -> dict:
        """The ``sampling`` entry of a provenance record."""
        backends = sorted(self.prompts)
        return {
            "mode": self.mode,
            "backend": "+".join(backends) or None,
            "prompts": dict(self.prompts),
            "fallbacks": list(self.fallbacks),
            "unexpected_fallback": self.unexpected_fallback,
        }

    @classmethod
    def from_record(cls, record: dict) -> "BackendUsage":
        return cls(record["mode"], dict(record["prompts"]), list(record["fallbacks"]))


def engine_mode(config: SamplingConfig) -> str:
    """The back-end mode: `config.engine`, else $EASY2HARD_SAMPLING_ENGINE, else auto (the one place
    that reads the variable)."""
    mode = config.engine or os.environ.get("EASY2HARD_SAMPLING_ENGINE") or "auto"
    if mode not in ENGINE_MODES:
        raise ValueError(
            f"config: field 'sampling.engine' (or $EASY2HARD_SAMPLING_ENGINE): {mode!r} is not one of "
            f"{list(ENGINE_MODES)}"
        )
    return mode


def use_vllm(config: SamplingConfig, model_path: str | None) -> bool:
    """Whether a model saved at `model_path` is sampled by vLLM: always under ``vllm`` (which must be
    installed), under ``auto`` when vLLM is installed and CUDA is present (on CPU its model load,
    tens of seconds, costs more than the tiny offline model's whole sampling job). In-process
    weights (PPO rollouts, `model_path` None) never are."""
    mode = engine_mode(config)
    if mode == "vllm" and not vllm_backend.installed():
        raise ValueError(
            "config: field 'sampling.engine' is 'vllm' but vLLM is not installed "
            "(pip install -e '.[vllm]' on GPU machines; README, Fast sampling, for CPU)"
        )
    if model_path is None:
        return False
    return mode == "vllm" or (mode == "auto" and vllm_backend.installed() and torch.cuda.is_available())


def load_policy(path: str, config: SamplingConfig):
    """(model, tokenizer) to sample a saved policy with: vLLM loads the model itself (none here),
    the other back ends need it in this process (bf16 on CUDA, fp32 on CPU)."""
    if use_vllm(config, path):
        tokenizer = AutoTokenizer.from_pretrained(path)
        modeling.ensure_pad_token(tokenizer)
        return None, tokenizer
    device, dtype = modeling.device_and_dtype()
    model, tokenizer = modeling.load_model(path, dtype=dtype)
    return model.to(device).eval(), tokenizer


def use_engine(model, config: SamplingConfig, usage: BackendUsage | None = None) -> bool:
    """Whether ``generate`` goes through the sampling engine (see the module docstring); a
    fallback under ``auto`` is recorded in ``usage``."""
    mode = engine_mode(config)
    if mode == "hf":
        return False
    if mode == "vllm":  # a model in memory (PPO rollouts): vLLM samples saved models only
        (usage if usage is not None else BackendUsage()).fall_back(
            "vLLM samples models saved on disk; in-process weights use the engine", expected=True
        )
        mode = "auto"
    unsupported = sampling_engine.check_support(model)
    if unsupported is None:
        return True
    if mode == "engine":
        raise ValueError(f"sampling engine requested but unsupported: {unsupported.reason}")
    (usage if usage is not None else BackendUsage()).fall_back(unsupported.reason, unsupported.by_design)
    return False


def generate(
    model,
    tokenizer,
    prompts: list[list[int]],
    config: SamplingConfig,
    progress: bool = True,
    desc: str = "sample",
    usage: BackendUsage | None = None,
    model_path: str | None = None,
) -> Iterator[list[dict]]:
    """For each prompt (token ids), yield its N continuations: {text, token_ids, num_tokens, finished}
    (token_ids: the sampled ids up to and including EOS, which PPO scores as they were drawn).
    ``usage`` counts the prompts each back end sampled and records any fallback. `model_path`, the
    folder `model` was loaded from, lets vLLM sample it (`model` may then be None)."""
    usage = usage if usage is not None else BackendUsage()
    usage.mode = engine_mode(config)
    num_samples = 1 if config.greedy else config.num_samples
    if use_vllm(config, model_path):
        options = vllm_backend.VLLMOptions(**(config.vllm or {}))
        for group in vllm_backend.generate(model_path, tokenizer, prompts, config, options, progress):
            usage.count("vllm")
            yield [_decode(tokenizer, torch.tensor(tokens, dtype=torch.long)) for tokens in group]
        return
    bar = tqdm(total=len(prompts) * num_samples, desc=desc, unit="seq", disable=not progress, mininterval=2)
    if use_engine(model, config, usage):
        options = sampling_engine.EngineOptions(num_slots=max(1, config.batch_size // num_samples) * num_samples)
        params = sampling_engine.SamplingParams(
            max_new_tokens=config.max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            greedy=config.greedy,
            temperature=config.temperature,
            top_k=config.top_k,
            top_p=config.top_p,
            seed=config.seed * 1_000_003,
        )
        yielded = 0
        try:
            runner = sampling_engine.SamplingEngine(model, options)
            for group in runner.run(
                prompts, num_samples, params, pad_token_id=tokenizer.pad_token_id, on_finished=bar.update
            ):
                usage.count("engine")
                yield [_decode(tokenizer, torch.tensor(tokens, dtype=torch.long)) for tokens in group]
                yielded += 1
        except Exception as error:  # noqa: BLE001
            # The engine's CUDA-graph path has not met every GPU/driver yet: under `auto` a failure
            # costs speed, not the run (an explicit `engine` re-raises). Prompts already answered
            # are not sampled again.
            if usage.mode != "auto":
                raise
            usage.fall_back(f"engine failed: {error!r}", expected=False)
            prompts = prompts[yielded:]
            bar.reset(total=len(prompts) * num_samples)
        else:
            bar.close()
            return
    prompts_per_batch = max(1, config.batch_size // num_samples)
    device = next(model.parameters()).device
    for start in range(0, len(prompts), prompts_per_batch):
        encoded = _left_pad(prompts[start : start + prompts_per_batch], tokenizer.pad_token_id, device)
        torch.manual_seed(config.seed * 1_000_003 + start)
        finished = FinishedSequences(bar, tokenizer.eos_token_id)
        with torch.inference_mode():
            output = model.generate(
                stopping_criteria=StoppingCriteriaList([finished]),
                **encoded,
                do_sample=not config.greedy,
                temperature=None if config.greedy else config.temperature,
                top_k=None if config.greedy else config.top_k,
                top_p=None if config.greedy else config.top_p,
                num_return_sequences=num_samples,
                max_new_tokens=config.max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        generated = output[:, encoded["input_ids"].shape[1] :].cpu()
        usage.count("hf", len(generated) // num_samples)
        bar.update(len(generated) - finished.count)  # the sequences cut at max_new_tokens
        for offset in range(0, len(generated), num_samples):
            yield [_decode(tokenizer, tokens) for tokens in generated[offset : offset + num_samples]]
    bar.close()


class FinishedSequences(StoppingCriteria):
    """Moves a progress bar as sequences of an HF `generate` batch reach EOS (the batch returns only
    when its longest sequence is done); stops nothing. Called once per decoding step, it reads only
    the newest token of each row."""

    def __init__(self, bar, eos_token_id: int):
        self.bar, self.eos_token_id, self.done, self.count = bar, eos_token_id, None, 0

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        newest = input_ids[:, -1] == self.eos_token_id
        self.done = newest if self.done is None else self.done | newest
        done = int(self.done.sum())
        self.bar.update(done - self.count)
        self.count = done
        return torch.zeros_like(newest)


def _decode(tokenizer, tokens: torch.Tensor) -> dict:
    is_eos = tokens == tokenizer.eos_token_id
    finished = bool(is_eos.any())
    length = int(is_eos.nonzero()[0, 0]) + 1 if finished else len(tokens)
    return {
        "text": tokenizer.decode(tokens[:length], skip_special_tokens=True),
        "token_ids": tokens[:length].tolist(),
        "num_tokens": length,
        "finished": finished,
    }


def sample_solutions(
    model,
    tokenizer,
    questions: list[dict],
    config: SamplingConfig,
    progress: bool = True,
    usage: BackendUsage | None = None,
    context: str = "",
    model_path: str | None = None,
):
    """Yield one row per (question, sample) with the decoded completion. With an in-context
    `context` (exemplars), a completion ends before the next "# Question" the model starts."""
    prompts = [encode_prompt(tokenizer, question["problem"], context=context) for question in questions]
    for question, continuations in zip(
        questions, generate(model, tokenizer, prompts, config, progress, usage=usage, model_path=model_path)
    ):
        for index, continuation in enumerate(continuations):
            if context:
                text, stopped = formats.cut_at_stop(continuation["text"])
                continuation = {**continuation, "text": text, "finished": continuation["finished"] or stopped}
            yield {
                "unique_id": question["unique_id"],
                "level": question["level"],
                "subject": question["subject"],
                "sample_index": index,
                "completion": continuation["text"],
                "num_tokens": continuation["num_tokens"],
                "finished": continuation["finished"],
            }


def sample_in_shards(
    model,
    tokenizer,
    questions: list[dict],
    config: SamplingConfig,
    out: str,
    shard_questions: int,
    model_fingerprint: dict,
    context: str = "",
    model_path: str | None = None,
) -> tuple[int, BackendUsage]:
    """`sample_solutions` into `out`, shard by shard, so a killed job resumes where it stopped;
    returns the number of rows and which back end sampled them (all shards, resumed ones too).

    Shards of `shard_questions` questions are written atomically to `<out>.shards/`, each after
    its back-end record (`shard-NNNNN.usage.json`); a re-run of the same job (same settings,
    questions and model, checked by a fingerprint) skips the shards already there. Shard k samples
    with seed `seed + k`, so a resumed run writes exactly what an uninterrupted one would. The
    shards are joined into `out` (atomically) and removed.
    """
    shard_dir = Path(f"{out}.shards")
    fingerprint = hashlib.sha256(
        json.dumps(
            [
                asdict(config),
                engine_mode(config),
                shard_questions,
                [q["unique_id"] for q in questions],
                model_fingerprint,
                context,
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()
    marker = shard_dir / "fingerprint"
    if shard_dir.exists() and (not marker.exists() or marker.read_text() != fingerprint):
        log.warning("%s: removing shards of a run with other settings, questions or model", shard_dir)
        shutil.rmtree(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)
    num_shards = max(1, math.ceil(len(questions) / shard_questions))
    paths = [shard_dir / f"shard-{k:05d}.jsonl" for k in range(num_shards)]
    done = sum(path.exists() for path in paths)
    if done:
        log.info("resuming %s: %d of %d shards already sampled", out, done, num_shards)
    usage = BackendUsage(engine_mode(config))
    for k, path in enumerate(paths):
        usage_path = path.with_suffix(".usage.json")
        if not path.exists():
            shard, shard_usage = questions[k * shard_questions : (k + 1) * shard_questions], BackendUsage()
            rows = list(
                sample_solutions(
                    model,
                    tokenizer,
                    shard,
                    replace(config, seed=config.seed + k),
                    usage=shard_usage,
                    context=context,
                    model_path=model_path,
                )
            )
            write_json(usage_path, shard_usage.as_record())
            write_jsonl(path, rows)
        usage.merge(BackendUsage.from_record(json.loads(usage_path.read_text())))
    log.info("%s: sampled by %s", out, json.dumps(usage.as_record()))
    count = 0
    with atomic_output(out) as tmp, open(tmp, "wb") as joined:
        for path in paths:
            with open(path, "rb") as shard:
                for line in shard:
                    joined.write(line)
                    count += 1
    shutil.rmtree(shard_dir)
    return count, usage
