"""The one training loop: SFT now, reward models and RL reuse it with their own loss.

Read it top to bottom: examples -> batches -> engine.backward/step -> log -> save.
The engine is DeepSpeed (ZeRO, bf16) when CUDA is present and DeepSpeed is installed, and a
plain-torch engine with the same three-call interface otherwise, so GPU and CPU share this code.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from easy2hard import formats, tracking
from easy2hard.config import from_dict
from easy2hard.io import atomic_output
from easy2hard.launch import prepare_environment
from easy2hard.modeling import autocast, device_and_dtype
from easy2hard.sampling import encode_prompt

log = logging.getLogger(__name__)
IGNORE_INDEX = -100
DEEPSPEED_CONFIG = Path(__file__).parent / "deepspeed_zero.json"


@dataclass
class TrainConfig:
    """One training section of the config. The defaults are the `sft` section's; each other
    training section has a subclass with its own (EvaluatorTrainConfig, RestEmTrainConfig,
    DPOTrainConfig, PPOPolicyTrainConfig, PPOValueTrainConfig), and config.yaml lists every field
    of each with exactly these values (tests/test_config_homes.py)."""

    learning_rate: float = 3e-3
    epochs: float = 8
    global_batch_size: int = 32
    micro_batch_size: int = 32
    max_length: int = 512
    warmup_ratio: float = 0.05
    lr_scheduler: str = "cosine"  # cosine | linear | constant (after warm-up)
    weight_decay: float = 0.0
    adam_beta1: float = 0.9  # AdamW betas (HF TrainingArguments' names)
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0
    seed: int = 42
    deepspeed: str = "auto"  # auto | always | never
    zero_stage: int = 2
    gradient_checkpointing: bool = False
    packing: bool = True  # pack each micro-batch into max_length rows instead of padding it
    checkpoint_every: int = 100  # optimizer steps between resumable checkpoints (0: none)
    log_every: int = 10
    report_to: str = "none"  # none | tensorboard | wandb | mlflow: live curves of the train_log scalars

    @classmethod
    def from_dict(cls, config: dict):
        """An instance of `cls` (TrainConfig or a subclass) from a training section."""
        return from_dict(cls, config, "training")


# ---------------------------------------------------------------------------------------------
# Examples


def sft_example(problem: str, steps: list[str], answer: str, tokenizer, max_length: int) -> dict | None:
    """BOS + prompt (exactly as the sampler encodes it) + solution + EOS, loss on the solution.

    Returns None when the example does not fit in `max_length`: a truncated solution would
    teach the model to stop without an answer (and a prompt-only one gives a NaN loss).
    """
    prompt_ids = encode_prompt(tokenizer, problem)
    solution_ids = tokenizer(formats.format_solution(steps, answer), add_special_tokens=False)["input_ids"]
    input_ids = prompt_ids + solution_ids + [tokenizer.eos_token_id]
    if len(input_ids) > max_length:
        return None
    labels = [IGNORE_INDEX] * len(prompt_ids) + solution_ids + [tokenizer.eos_token_id]
    return {"input_ids": input_ids, "labels": labels}


def continuation_example(problem: str, context: str, target: str, eos: bool, tokenizer, max_length: int) -> dict | None:
    """BOS + prompt + `context` (a partial solution, no loss) + `target` (loss) + EOS when `eos`:
    one step of a solution given the steps before it (the PRM800K SFT recipe). None when too long.

    Context and target are tokenised together, as the model reads and writes them, and a token is
    learned when it starts inside the target: tokenised alone, a target such as "\n\nSo ..." gets a
    word-start marker from SentencePiece-style tokenizers that never follows a step in a solution."""
    prompt_ids = encode_prompt(tokenizer, problem)
    encoded = tokenizer(context + target, add_special_tokens=False, return_offsets_mapping=True)
    solution_ids = encoded["input_ids"] + ([tokenizer.eos_token_id] if eos else [])
    learned = [start >= len(context) for start, _ in encoded["offset_mapping"]] + ([True] if eos else [])
    input_ids = prompt_ids + solution_ids
    if len(input_ids) > max_length:
        return None
    labels = [token if learn else IGNORE_INDEX for token, learn in zip(solution_ids, learned)]
    return {"input_ids": input_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + labels}


def _label_pad(labels: list) -> int | float:
    """The ignore value in the labels' own type: token ids (SFT) or float targets (evaluators)."""
    return IGNORE_INDEX if isinstance(labels[0], int) else float(IGNORE_INDEX)


def collate(examples: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch to its longest example; labels (when present) padded with the
    ignore value in their own type (float labels come out as float32)."""
    width = max(len(example["input_ids"]) for example in examples)
    batch = {"input_ids": [], "attention_mask": []}
    for example in examples:
        pad = width - len(example["input_ids"])
        batch["input_ids"].append(example["input_ids"] + [pad_token_id] * pad)
        batch["attention_mask"].append([1] * len(example["input_ids"]) + [0] * pad)
    tensors = {key: torch.tensor(value) for key, value in batch.items()}
    if "labels" in examples[0]:
        fill = _label_pad(examples[0]["labels"])
        labels = torch.tensor([e["labels"] + [fill] * (width - len(e["labels"])) for e in examples])
        tensors["labels"] = labels.float() if labels.is_floating_point() else labels
    return tensors


def pack(examples: list[dict], pad_token_id: int, max_length: int) -> dict[str, torch.Tensor]:
    """Pack a micro-batch into as few rows of at most `max_length` tokens as fit (first-fit
    decreasing), with position ids restarting at each example and no attention mask:
    transformers then keeps attention inside each example (block-diagonal causal mask with SDPA,
    varlen kernels with flash attention), so no compute is spent on padding.

    Labels keep their dtype (token ids for SFT, floats for evaluators); each example's first
    token is never a target, so no loss crosses from one packed example into the next.
    """
    rows: list[list[dict]] = []
    for example in sorted(examples, key=lambda e: -len(e["input_ids"])):
        for row in rows:
            if sum(len(e["input_ids"]) for e in row) + len(example["input_ids"]) <= max_length:
                row.append(example)
                break
        else:
            rows.append([example])
    width = max(sum(len(e["input_ids"]) for e in row) for row in rows)
    label_pad = _label_pad(examples[0]["labels"])
    batch = {"input_ids": [], "labels": [], "position_ids": []}
    for row in rows:
        input_ids, labels, positions = [], [], []
        for example in row:
            input_ids += example["input_ids"]
            labels += [label_pad] + list(example["labels"][1:])
            positions += list(range(len(example["input_ids"])))
        pad = width - len(input_ids)
        batch["input_ids"].append(input_ids + [pad_token_id] * pad)
        batch["labels"].append(labels + [label_pad] * pad)
        batch["position_ids"].append(positions + list(range(len(positions), len(positions) + pad)))
    tensors = {key: torch.tensor(value) for key, value in batch.items()}
    if tensors["labels"].is_floating_point():
        tensors["labels"] = tensors["labels"].float()
    return tensors


def model_inputs(batch: dict[str, torch.Tensor]) -> dict:
    """What the model sees: ids plus an attention mask (padded batches) or position ids (packed).

    No KV cache: training needs none, and transformers only honours packed position ids when
    no cache is passed (otherwise packed examples would attend to each other)."""
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "position_ids") if key in batch}
    return {**inputs, "use_cache": False}


def causal_lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the solution tokens of the micro-batch.

    `model` is the engine (DeepSpeed or TorchEngine); both forward like the HF module."""
    return model(**model_inputs(batch), labels=batch["labels"]).loss


def token_logps(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each labelled token under `logits` (position t predicts token t+1), and
    the mask of labelled tokens; both [batch, length-1]. Gather minus logsumexp, so no full
    log-softmax copy of the vocabulary is kept (DPO and PPO read only the sampled tokens)."""
    logits = logits[:, :-1].float() / temperature
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    picked = torch.gather(logits, 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked - torch.logsumexp(logits, dim=-1)) * mask, mask


# ---------------------------------------------------------------------------------------------
# Engines


def world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def use_deepspeed(config: TrainConfig) -> bool:
    if config.deepspeed == "never":
        return False
    if config.deepspeed == "always":
        return True
    return torch.cuda.is_available() and importlib.util.find_spec("deepspeed") is not None


class TorchEngine:
    """Plain torch with DeepSpeed's engine interface: backward() every micro-step, step() applies
    the update only at the gradient-accumulation boundary."""

    def __init__(self, model, optimizer, scheduler, accumulation_steps: int, max_grad_norm: float):
        self.module, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.accumulation_steps, self.max_grad_norm = accumulation_steps, max_grad_norm
        self.micro_steps = 0

    def __call__(self, *args, **kwargs):
        with autocast(self.device):
            return self.module(*args, **kwargs)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accumulation_steps).backward()

    def step(self) -> None:
        self.micro_steps += 1
        if self.micro_steps % self.accumulation_steps:
            return
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    # DeepSpeed's checkpoint interface, so the loop resumes either engine the same way.
    def save_checkpoint(self, directory: str, tag: str, client_state: dict) -> None:
        state = {
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "micro_steps": self.micro_steps,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "client_state": client_state,
        }
        Path(directory, tag).mkdir(parents=True, exist_ok=True)
        torch.save(state, Path(directory, tag, "state.pt"))

    def load_checkpoint(self, directory: str, tag: str) -> tuple[str, dict]:
        # On the CPU: RNG states must stay CPU tensors; the state dicts move on load.
        state = torch.load(Path(directory, tag, "state.pt"), map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_steps = state["micro_steps"]
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return str(Path(directory, tag)), state["client_state"]


def deepspeed_config(config: TrainConfig, accumulation_steps: int) -> dict:
    """The DeepSpeed JSON shipped with the package, its "auto" fields filled from the run."""
    ds_config = json.loads(DEEPSPEED_CONFIG.read_text())
    ds_config["train_micro_batch_size_per_gpu"] = config.micro_batch_size
    ds_config["gradient_accumulation_steps"] = accumulation_steps
    ds_config["train_batch_size"] = config.global_batch_size
    ds_config["gradient_clipping"] = config.max_grad_norm
    ds_config["zero_optimization"]["stage"] = config.zero_stage
    ds_config["bf16"]["enabled"] = torch.cuda.is_available()
    return ds_config


def accumulation_steps(config: TrainConfig) -> int:
    """Micro-batches per optimizer step in each process: global batch / (micro batch x processes)."""
    processes = world()[1]
    per_step = config.micro_batch_size * processes
    if config.global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size {config.global_batch_size} is not a multiple of "
            f"micro_batch_size {config.micro_batch_size} x {processes} processes"
        )
    return config.global_batch_size // per_step


@contextlib.contextmanager
def partitioned_loading(config: TrainConfig):
    """Models loaded (`from_pretrained`) inside this block under ZeRO-3 are partitioned across the
    ranks as their weights are read (DeepSpeed's zero.Init, through transformers' HfDeepSpeedConfig):
    no process holds a whole 34b model. Other stages and engines: nothing happens."""
    if not (use_deepspeed(config) and config.zero_stage == 3):
        yield
        return
    prepare_environment()
    single_process_defaults()
    import deepspeed
    from transformers.integrations import HfDeepSpeedConfig

    deepspeed.init_distributed()
    marker = HfDeepSpeedConfig(deepspeed_config(config, accumulation_steps(config)))  # it reads the zero section
    try:
        yield
    finally:
        del marker  # transformers holds it weakly: later calls (saving, generate) see plain modules


def single_process_defaults() -> None:
    """DeepSpeed needs a process group; a plain `python` run (no launcher) is rank 0 of 1."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as probe:  # a free port, so parallel jobs do not collide
            probe.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])


def lr_lambda(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warmup = math.ceil(config.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        if config.lr_scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if config.lr_scheduler == "linear":
            return max(0.0, 1 - progress)
        return 1.0

    return factor


def make_engine(model, config: TrainConfig, total_steps: int, accumulation_steps: int):
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        betas=(config.adam_beta1, config.adam_beta2),  # DeepSpeed takes this optimizer as it is
        fused=torch.cuda.is_available(),  # one kernel for the whole update on GPU
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config, total_steps))
    if not use_deepspeed(config):
        model.to(device_and_dtype()[0])
        return TorchEngine(model, optimizer, scheduler, accumulation_steps, config.max_grad_norm)
    prepare_environment()
    import deepspeed

    single_process_defaults()
    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(config, accumulation_steps),
    )
    return engine


# ---------------------------------------------------------------------------------------------
# The loop


def global_batches(num_examples: int, global_batch_size: int, epochs: float, seed: int) -> list[list[int]]:
    """Example indices per optimizer step: reshuffled each epoch, the last batch of an epoch
    topped up from the epoch's start so every step sees a full global batch."""
    rng = random.Random(seed)
    steps_per_epoch = math.ceil(num_examples / global_batch_size)
    total_steps = max(1, round(steps_per_epoch * epochs))
    batches: list[list[int]] = []
    while len(batches) < total_steps:
        order = list(range(num_examples))
        rng.shuffle(order)
        wrapped = order * math.ceil(steps_per_epoch * global_batch_size / num_examples)
        for step in range(steps_per_epoch):
            batches.append(wrapped[step * global_batch_size : (step + 1) * global_batch_size])
    return batches[:total_steps]


def latest_checkpoint(directory: str | None) -> str | None:
    """The tag of the newest complete checkpoint (its name is written last, after the data)."""
    if directory is None:
        return None
    marker = Path(directory, "complete")
    return marker.read_text().strip() if marker.exists() else None


def run_fingerprint(config: TrainConfig, examples: list[dict], engine_kind: str, extra: dict | None = None) -> str:
    """What a checkpoint must match to be resumed: the settings, the data, the process layout."""
    digest = hashlib.sha256()
    settings = {k: v for k, v in asdict(config).items() if k != "report_to"}  # where curves go changes no step
    digest.update(json.dumps([settings, world()[1], engine_kind, extra or {}], sort_keys=True).encode())
    for example in examples:
        digest.update(json.dumps(token_data(example), sort_keys=True).encode())
    return digest.hexdigest()


def token_data(example: dict) -> dict:
    """The ids and targets an example trains on (a preference pair: those of both sides). Values
    derived from them, like DPO's reference log-probs, are recomputed on every run and need not be
    bit-identical on GPU, so a checkpoint is matched on the data alone."""
    return {
        key: token_data(value) if isinstance(value, dict) else value
        for key, value in example.items()
        if isinstance(value, dict) or key in ("input_ids", "labels")
    }


def usable_checkpoint(directory: str | None, fingerprint: str) -> str | None:
    """The latest checkpoint if it belongs to this very run; a stale one (other settings or data
    after a killed run) is removed rather than silently resumed."""
    tag = latest_checkpoint(directory)
    if tag is None:
        return None
    recorded = Path(directory, "fingerprint")
    if recorded.exists() and recorded.read_text().strip() == fingerprint:
        return tag
    log.warning("ignoring checkpoints in %s: they belong to a run with other settings or data", directory)
    if world()[0] == 0:
        shutil.rmtree(directory, ignore_errors=True)
    if world()[1] > 1:
        torch.distributed.barrier()
    return None


def save_checkpoint(engine, directory: str, step: int, history: list[dict], fingerprint: str) -> None:
    """Checkpoint every process's engine state; then mark it complete and drop the older one."""
    tag = f"step-{step}"
    previous = latest_checkpoint(directory)
    engine.save_checkpoint(directory, tag=tag, client_state={"step": step, "history": history})
    rank, world_size = world()
    if world_size > 1:
        torch.distributed.barrier()
    if rank == 0:
        # Our own marker ("latest" is DeepSpeed's): written only once the state is on disk.
        Path(directory, "fingerprint").write_text(fingerprint)
        Path(directory, "complete.tmp").write_text(tag)
        os.replace(Path(directory, "complete.tmp"), Path(directory, "complete"))
        if previous and previous != tag:
            shutil.rmtree(Path(directory, previous), ignore_errors=True)


def num_tokens(example: dict) -> int:
    """Tokens an example puts through the model: one sequence, or each side of a preference pair."""
    if "input_ids" in example:
        return len(example["input_ids"])
    return sum(num_tokens(part) for part in example.values() if isinstance(part, dict))


class Trainer:
    """One model's optimisation: its engine, the micro-batching of a global batch, checkpoints.

    `train` below drives it over a fixed dataset (SFT, reward models, ReST-EM, DPO); PPO drives a
    policy and a value Trainer from its rollout loop. `loss_fn(engine, batch)` returns the loss, or
    (loss, {name: float}) to log more than the loss.
    """

    def __init__(
        self,
        model,
        config: TrainConfig,
        total_steps: int,
        pad_token_id: int,
        loss_fn: Callable = causal_lm_loss,
        collate_fn: Callable | None = None,
    ):
        self.rank, self.world_size = world()
        accumulation = accumulation_steps(config)
        if self.world_size > 1 and not use_deepspeed(config):
            raise ValueError("several processes need DeepSpeed (set deepspeed: auto or always, and install it)")
        self.config, self.pad_token_id, self.loss_fn = config, pad_token_id, loss_fn
        # Packed rows or padded ones: the loss over each micro-batch is the same (tests/test_packing.py).
        if collate_fn is None:
            collate_fn = functools.partial(pack, max_length=config.max_length) if config.packing else collate
        self.collate_fn = collate_fn
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        self.engine = make_engine(model, config, total_steps, accumulation)
        self.device = self.engine.device

    @property
    def module(self):
        return self.engine.module

    def step(self, examples: list[dict], local: bool = False) -> dict:
        """One optimizer step over a global batch (`local`: already this process's share)."""
        share = examples if local else examples[self.rank :: self.world_size]
        losses, metrics, tokens = [], {}, 0
        for offset in range(0, len(share), self.config.micro_batch_size):
            micro = share[offset : offset + self.config.micro_batch_size]
            batch = {key: value.to(self.device) for key, value in self.collate_fn(micro, self.pad_token_id).items()}
            output = self.loss_fn(self.engine, batch)
            loss, extra = output if isinstance(output, tuple) else (output, {})
            self.engine.backward(loss)
            self.engine.step()
            losses.append(loss.item())
            for name, value in extra.items():
                metrics.setdefault(name, []).append(float(value))
            tokens += sum(num_tokens(example) for example in micro)
        return {
            "loss": sum(losses) / len(losses),
            **{name: sum(values) / len(values) for name, values in metrics.items()},
            "lr": self.engine.optimizer.param_groups[0]["lr"],
            "tokens": tokens * (1 if local else self.world_size),
        }

    def resume(self, checkpoint_dir: str | None, fingerprint: str) -> tuple[int, list[dict], dict]:
        """(steps done, history, client state) of this run's latest checkpoint; (0, [], {}) if none."""
        tag = usable_checkpoint(checkpoint_dir, fingerprint)
        if tag is None:
            return 0, [], {}
        _, client_state = self.engine.load_checkpoint(checkpoint_dir, tag=tag)
        log.info("resumed from %s/%s at step %d", checkpoint_dir, tag, client_state["step"])
        return client_state["step"], client_state["history"], client_state

    def checkpoint(self, checkpoint_dir: str, step: int, history: list[dict], fingerprint: str) -> None:
        save_checkpoint(self.engine, checkpoint_dir, step, history, fingerprint)

    def finish(self):
        """The trained module in eval mode, once every process is done."""
        module = self.engine.module
        module.eval()
        if self.world_size > 1:
            torch.distributed.barrier()  # every rank done before rank 0 saves and the job ends
        return module


def train(
    model,
    examples: list[dict],
    config: TrainConfig,
    pad_token_id: int,
    loss_fn: Callable = causal_lm_loss,
    checkpoint_dir: str | None = None,
    collate_fn: Callable | None = None,
    tracker: tracking.Tracker = tracking.Tracker(),
) -> tuple[object, list[dict]]:
    """Optimise `loss_fn` over `examples`; returns (trained module, per-step log).

    With `checkpoint_dir` and `config.checkpoint_every`, the engine state is saved every that many
    steps, and a run that finds a checkpoint there resumes from it: the batch order is a pure
    function of the seed, so the resumed run sees exactly the batches the killed one had left.
    """
    if not examples:
        raise ValueError("no training examples")
    torch.manual_seed(config.seed)
    batches = global_batches(len(examples), config.global_batch_size, config.epochs, config.seed)
    trainer = Trainer(model, config, len(batches), pad_token_id, loss_fn, collate_fn)
    fingerprint = run_fingerprint(config, examples, type(trainer.engine).__name__) if checkpoint_dir else ""
    done, history, _ = trainer.resume(checkpoint_dir, fingerprint)
    start = time.perf_counter()
    progress = tqdm(
        batches[done:], desc="train", disable=trainer.rank != 0, mininterval=2, initial=done, total=len(batches)
    )
    for step, indices in enumerate(progress, start=done + 1):
        record = {
            "step": step,
            **trainer.step([examples[i] for i in indices]),
            "elapsed_s": round(time.perf_counter() - start, 3),
        }
        history.append(record)
        tracker.log(record)
        if step % config.log_every == 0:
            progress.set_postfix(loss=f"{record['loss']:.4f}")
        if checkpoint_dir and config.checkpoint_every and step % config.checkpoint_every == 0 and step < len(batches):
            trainer.checkpoint(checkpoint_dir, step, history, fingerprint)
    tracker.close()
    return trainer.finish(), history


def tracker_for(config: TrainConfig, output_dir: str, extra: dict | None = None) -> tracking.Tracker:
    """The live-curve tracker of the run that writes `output_dir` (config.report_to; rank 0)."""
    return tracking.open_tracker(config.report_to, output_dir, {**asdict(config), **(extra or {})}, world()[0])


def drop_too_long(examples: list[dict | None], source: str, max_length: int, stats: str | None = None) -> list[dict]:
    """The examples that fit (builders return None for the others), with a warning that counts
    the rest. No example at all is an error naming the data file and, from the `stats` file its
    data stage wrote beside it, why the data stage kept nothing; none fitting is another error."""
    if not examples:
        raise SystemExit(empty_data_message(source, stats))
    kept = [example for example in examples if example is not None]
    if not kept:
        raise SystemExit(
            f"{source}: none of its {len(examples)} training examples fits in max_length {max_length}"
            " (raise the stage's train.max_length)"
        )
    if len(kept) < len(examples):
        log.warning(
            "%s: skipped %d of %d examples longer than max_length %d",
            source,
            len(examples) - len(kept),
            len(examples),
            max_length,
        )
    return kept


def empty_data_message(source: str, stats: str | None) -> str:
    """What to tell a user whose training data file is empty: the cause its data stage recorded
    (``empty_because`` in its stats file) and where the counts are."""
    cause = ""
    if stats and Path(stats).is_file():
        cause = json.loads(Path(stats).read_text()).get("empty_because") or ""
    where = f" (counts in {stats})" if stats else ""
    return f"{source}: no training examples: {cause or 'the file is empty'}{where}"


def checkpoint_dir_for(output_dir: str) -> str:
    """Resumable checkpoints live beside the output, which only appears when training is done."""
    return f"{output_dir.rstrip('/')}.checkpoints"


def gathered_state_dict(module) -> dict | None:
    """Under ZeRO-3 every weight is partitioned across the ranks: gather them one parameter at a
    time (every rank takes part; the whole model never sits on one GPU) into a CPU state dict on
    rank 0. None when nothing is partitioned: the module itself is saved."""
    if not any(hasattr(param, "ds_id") for param in module.parameters()):
        return None
    import deepspeed

    rank, state = world()[0], {}
    for name, param in module.named_parameters():
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            if rank == 0:
                state[name] = param.detach().cpu().clone()
    if rank == 0:
        persistent = module.state_dict().keys()  # names only (its tensors are the empty partitions)
        state.update({name: buffer.detach().cpu() for name, buffer in module.named_buffers() if name in persistent})
    return state


def save_model(module, tokenizer, output_dir: str, history: list[dict], config: TrainConfig, extra: dict | None = None):
    """Save an HF folder atomically (rank 0 only; under ZeRO-3 every rank first helps gather the
    weights), with the training log and config beside it; the run's checkpoints are removed once
    the model is safely in place."""
    state = gathered_state_dict(module)
    rank, _ = world()
    if rank != 0:
        return
    with atomic_output(output_dir, directory=True) as tmp:
        module.save_pretrained(tmp, safe_serialization=True, **({} if state is None else {"state_dict": state}))
        tokenizer.save_pretrained(tmp)
        with open(Path(tmp) / "train_log.jsonl", "w") as handle:
            for record in history:
                handle.write(json.dumps(record) + "\n")
        (Path(tmp) / "train_config.json").write_text(json.dumps({**asdict(config), **(extra or {})}, indent=2))
    shutil.rmtree(checkpoint_dir_for(output_dir), ignore_errors=True)
