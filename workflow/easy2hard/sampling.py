"""Sampling N solutions per question with HF ``generate`` (batched, seeded, left-padded).

Prompts are tokenized exactly as in SFT -- BOS, the prompt, then (for rollouts from a partial
solution) the solution prefix, each tokenized on its own -- so the policy continues from the
token boundary it was trained on. Each batch is seeded from (seed, index of its first prompt),
so a run is reproducible for a fixed batch layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from tqdm.auto import tqdm

from easy2hard import formats


@dataclass
class SamplingConfig:
    num_samples: int = 32
    temperature: float = 0.7
    top_k: int = 20
    top_p: float = 1.0
    max_new_tokens: int = 768
    batch_size: int = 64  # sequences per generate call
    seed: int = 0
    greedy: bool = False


def encode_prompt(tokenizer, problem: str, solution_prefix: str = "") -> list[int]:
    """BOS + prompt (+ partial solution), tokenized piecewise like the SFT examples."""
    ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
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


def generate(
    model, tokenizer, prompts: list[list[int]], config: SamplingConfig, progress: bool = True, desc: str = "sample"
) -> Iterator[list[dict]]:
    """For each prompt (token ids), yield its N continuations: {text, num_tokens, finished}."""
    num_samples = 1 if config.greedy else config.num_samples
    prompts_per_batch = max(1, config.batch_size // num_samples)
    device = next(model.parameters()).device
    bar = tqdm(total=len(prompts) * num_samples, desc=desc, unit="seq", disable=not progress, mininterval=2)
    for start in range(0, len(prompts), prompts_per_batch):
        encoded = _left_pad(prompts[start : start + prompts_per_batch], tokenizer.pad_token_id, device)
        torch.manual_seed(config.seed * 1_000_003 + start)
        with torch.inference_mode():
            output = model.generate(
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
        for offset in range(0, len(generated), num_samples):
            yield [_decode(tokenizer, tokens) for tokens in generated[offset : offset + num_samples]]
        bar.update(len(generated))
    bar.close()


def _decode(tokenizer, tokens: torch.Tensor) -> dict:
    is_eos = tokens == tokenizer.eos_token_id
    finished = bool(is_eos.any())
    length = int(is_eos.nonzero()[0, 0]) + 1 if finished else len(tokens)
    return {
        "text": tokenizer.decode(tokens[:length], skip_special_tokens=True),
        "num_tokens": length,
        "finished": finished,
    }


def sample_solutions(model, tokenizer, questions: list[dict], config: SamplingConfig, progress: bool = True):
    """Yield one row per (question, sample) with the decoded completion."""
    prompts = [encode_prompt(tokenizer, question["problem"]) for question in questions]
    for question, continuations in zip(questions, generate(model, tokenizer, prompts, config, progress)):
        for index, continuation in enumerate(continuations):
            yield {
                "unique_id": question["unique_id"],
                "level": question["level"],
                "subject": question["subject"],
                "sample_index": index,
                "completion": continuation["text"],
                "num_tokens": continuation["num_tokens"],
                "finished": continuation["finished"],
            }
