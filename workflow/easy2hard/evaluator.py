"""Evaluators (reward models): a causal-LM backbone with a scalar head on every token
(``AutoModelForTokenClassification``, one label), read at the end of each scoring unit.

A solution's scoring units are its steps and then its answer section. The score of a step is
read at the newline that ends it; the score of the answer at the EOS token that ends the
solution. Every example is checked to have exactly one score position per unit -- the classic
silent failure of PRM trainers is a tokenizer that never produces the tag, leaving no labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

from easy2hard import formats
from easy2hard.sampling import encode_prompt
from easy2hard.training import IGNORE_INDEX, TrainConfig, collate, model_inputs


@dataclass
class EvaluatorTrainConfig(TrainConfig):
    """evaluators.train: every evaluator's training (evaluators.<kind>.train overrides keys of it)."""

    learning_rate: float = 2e-3
    epochs: float = 1
    micro_batch_size: int = 16


class AlignmentError(ValueError):
    """Score positions do not line up one-to-one with the scoring units of a solution."""


@dataclass
class Rendered:
    input_ids: list[int]
    positions: list[int]  # score position of each unit (steps, then the answer)
    solution_start: int  # index of the first solution token
    unit_ends: list[int]  # last token of each unit's label span: a step's span ends with its whole separator


def solution_text(steps: list[str], answer: str | None) -> str:
    """Steps joined by blank lines, then the answer section, or a closing separator when the
    solution has no answer (so the last step too ends with the newline its score is read at)."""
    body = formats.STEP_SEPARATOR.join(formats.normalize_step(step) for step in steps)
    if answer is None:
        return body + formats.STEP_SEPARATOR
    return body + formats.ANSWER_MARKER + answer.strip()


def render(tokenizer, problem: str, steps: list[str], answer: str | None, finished: bool = True) -> Rendered:
    """Token ids of prompt + solution (+ EOS after an answer) and the score position of each unit.

    A solution cut off by the token limit (`finished` False) gets no EOS: its answer unit is
    read at its last token, so a truncated answer is not scored as a completed one."""
    prompt_ids = encode_prompt(tokenizer, problem)
    text = solution_text(steps, answer)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    newline_chars, cursor = [], 0
    for step in steps:
        cursor += len(formats.normalize_step(step))
        newline_chars.append(cursor)  # the "\n" right after the step
        cursor += len(formats.STEP_SEPARATOR)
    positions = [_token_at(offsets, char) for char in newline_chars]
    # A tokenizer that splits "\n\n" puts the second newline in a token of its own; it cannot see
    # the next step, so it is labelled with the step it ends (as the authors label both newlines).
    separator_ends = [_token_at(offsets, char + len(formats.STEP_SEPARATOR) - 1) for char in newline_chars]
    input_ids = prompt_ids + ids
    if answer is not None and finished:
        input_ids = input_ids + [tokenizer.eos_token_id]
        positions.append(len(ids))  # the EOS that ends the answer, in solution coordinates
    elif answer is not None:
        positions.append(len(ids) - 1)
    units = len(steps) + (answer is not None)
    if len(positions) != units or None in positions or any(b <= a for a, b in zip(positions, positions[1:])):
        raise AlignmentError(f"{units} scoring units but score positions {positions} in {text[:80]!r}...")
    if None in separator_ends:
        raise AlignmentError(f"no token covers a step separator in {text[:80]!r}...")
    unit_ends = [max(p, e) for p, e in zip(positions, separator_ends)] + positions[len(steps) :]
    start = len(prompt_ids)
    return Rendered(
        input_ids=input_ids,
        positions=[start + p for p in positions],
        solution_start=start,
        unit_ends=[start + e for e in unit_ends],
    )


def _token_at(offsets: list[tuple[int, int]], char: int) -> int | None:
    """Index of the token whose character span covers `char`."""
    for index, (start, end) in enumerate(offsets):
        if start <= char < end:
            return index
    return None


def training_example(example: dict, tokenizer, max_length: int, label_tokens: str) -> dict | None:
    """input_ids and per-token float labels (IGNORE_INDEX where unlabelled); None if too long.

    label_tokens "all": every token of a labelled unit carries its label (the paper's choice);
    "step_end": only the score position and the rest of its separator do. ORM examples in
    "step_end" mode are labelled at the final position only. A step's label covers its whole
    separator: with "\n\n" split into two tokens both newlines carry it.
    """
    rendered = render(tokenizer, example["problem"], example["steps"], example["answer"])
    if len(example["labels"]) != len(rendered.positions):
        raise AlignmentError(
            f"{example['unique_id']}: {len(example['labels'])} labels for {len(rendered.positions)} scoring units"
        )
    if len(rendered.input_ids) > max_length:
        return None
    labels = [float(IGNORE_INDEX)] * len(rendered.input_ids)  # float: collate pads labels by their type
    unit_starts = [rendered.solution_start] + [end + 1 for end in rendered.unit_ends[:-1]]
    last = len(rendered.positions) - 1
    for unit, (start, position, end, label) in enumerate(
        zip(unit_starts, rendered.positions, rendered.unit_ends, example["labels"])
    ):
        if label is None:
            continue
        if label_tokens == "all":
            labels[start : end + 1] = [float(label)] * (end + 1 - start)
        elif label_tokens == "step_end":  # the score position and the rest of the separator
            if example["kind"] != "orm" or unit == last:
                labels[position : end + 1] = [float(label)] * (end + 1 - position)
        else:
            raise ValueError(f"unknown label_tokens {label_tokens!r} (all | step_end)")
    return {"input_ids": rendered.input_ids, "labels": labels}


def bce_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Binary cross-entropy (soft labels allowed) over the labelled tokens of the micro-batch."""
    logits = model(**model_inputs(batch)).logits.squeeze(-1)
    mask = batch["labels"] != IGNORE_INDEX
    if not mask.any():  # nothing labelled here: a zero loss that keeps the graph, not NaN
        return logits.sum() * 0.0
    return torch.nn.functional.binary_cross_entropy_with_logits(logits[mask].float(), batch["labels"][mask])


def load_backbone(path: str, dtype: torch.dtype = torch.float32):
    """An evaluator initialised from a policy folder (the scalar head is new) or a saved evaluator."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    # No dropout before the head (transformers' default is 0.1): scores are deterministic and a
    # resumed run matches an uninterrupted one.
    config = AutoConfig.from_pretrained(path, num_labels=1)
    config.classifier_dropout = 0.0
    model = AutoModelForTokenClassification.from_pretrained(path, config=config, dtype=dtype)
    if dtype != torch.float32:
        # A bf16 head would leave ~3 significant digits in the scores (ties in best-of-N): the
        # backbone runs in `dtype`, the scalar head in fp32 on fp32 hidden states.
        model.score.float()
        model.score.register_forward_pre_hook(lambda module, inputs: tuple(x.float() for x in inputs))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def length_batches(lengths: list[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices of `lengths`, longest first, cut into batches of at most `batch_size` rows whose
    padded size (rows x longest row) stays within `max_tokens` (a longer row goes alone): one long
    problem no longer pads a whole batch to its length."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        batch = batches[-1] if batches else None
        if (
            batch
            and len(batch) < batch_size
            and (max_tokens is None or (len(batch) + 1) * lengths[batch[0]] <= max_tokens)
        ):
            batch.append(index)
        else:
            batches.append([index])
    return batches


@torch.inference_mode()
def score_solutions(
    model, tokenizer, solutions: list[dict], batch_size: int, max_tokens: int | None = None, progress: bool = False
) -> list[list[float]]:
    """Per-unit scores (sigmoid) of each {problem, completion, finished?}: its steps, then its answer.
    Identical solutions (a third of a tiny policy's samples) are scored once, in `length_batches`;
    `progress` shows a bar in distinct solutions."""
    device = next(model.parameters()).device
    keys = [(s["problem"], s["completion"], s.get("finished", True)) for s in solutions]
    distinct = list(dict.fromkeys(keys))
    rendered = []
    for problem, completion, finished in distinct:
        steps, answer = formats.parse_solution(completion)
        rendered.append(render(tokenizer, problem, steps, answer, finished))
    # Longest first, so each batch pads little; results are put back in input order.
    batches = length_batches([len(r.input_ids) for r in rendered], batch_size, max_tokens)
    scores: list[list[float]] = [[] for _ in rendered]
    bar = tqdm(total=len(rendered), desc="score", unit="solution", disable=not progress, mininterval=2)
    for chunk in batches:
        batch = collate([{"input_ids": rendered[i].input_ids} for i in chunk], tokenizer.pad_token_id)
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.squeeze(-1).float().cpu()
        probabilities = torch.sigmoid(logits)
        for row, index in enumerate(chunk):
            scores[index] = probabilities[row, rendered[index].positions].tolist()
        bar.update(len(chunk))
    bar.close()
    position = {key: index for index, key in enumerate(distinct)}
    return [list(scores[position[key]]) for key in keys]
