"""Sampling N solutions per question with HF ``generate`` (batched, seeded, left-padded).

Each batch is seeded from (seed, index of its first question), so a run is reproducible for a
fixed batch layout and a resumed or sharded run draws the same samples for the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def sample_solutions(model, tokenizer, questions: list[dict], config: SamplingConfig, progress: bool = True):
    """Yield one row per (question, sample) with the decoded completion."""
    num_samples = 1 if config.greedy else config.num_samples
    questions_per_batch = max(1, config.batch_size // num_samples)
    tokenizer.padding_side = "left"  # generation continues from the right edge of every prompt
    device = next(model.parameters()).device
    bar = tqdm(total=len(questions) * num_samples, desc="sample", unit="seq", disable=not progress, mininterval=2)
    for start in range(0, len(questions), questions_per_batch):
        chunk = questions[start : start + questions_per_batch]
        prompts = [formats.format_prompt(q["problem"]) for q in chunk]
        if tokenizer.bos_token_id is not None and tokenizer.bos_token:
            prompts = [tokenizer.bos_token + prompt for prompt in prompts]
        encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        torch.manual_seed(config.seed * 1_000_003 + start)
        with torch.no_grad():
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
        generated = output[:, encoded["input_ids"].shape[1] :]
        for row_index, tokens in enumerate(generated):
            question = chunk[row_index // num_samples]
            finished = bool((tokens == tokenizer.eos_token_id).any())
            length = int((tokens == tokenizer.eos_token_id).nonzero()[0, 0]) + 1 if finished else len(tokens)
            yield {
                "unique_id": question["unique_id"],
                "level": question["level"],
                "subject": question["subject"],
                "sample_index": row_index % num_samples,
                "completion": tokenizer.decode(tokens[:length], skip_special_tokens=True),
                "num_tokens": length,
                "finished": finished,
            }
        bar.update(len(generated))
    bar.close()
