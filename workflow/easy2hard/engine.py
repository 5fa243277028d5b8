"""A sampling engine for N solutions per question: shared prompt prefill, a slotted static KV cache,
continuous refilling, and (on CUDA) CUDA-graph-captured decode steps.

What it does, exactly:

* **Prefix sharing.** Work is a queue of (prompt, sample) jobs, N consecutive jobs per prompt.
  When free slots are refilled, the *distinct* prompts among the jobs taken are prefilled once
  (left-padded, in chunks of at most ``prefill_tokens`` padded tokens, into a transient
  ``DynamicCache``), and each prompt's keys/values are copied into every slot that samples from it;
  each slot then draws its own first token from the shared prefill logits. A prompt whose N jobs
  are split between two refills is prefilled once per refill (at most twice when N <= slots).
* **Static, slotted KV cache.** ``SlotCache`` holds one preallocated ``[slots, kv_heads, L, head_dim]``
  buffer per layer (L = longest prompt + max_new_tokens + slack) and a single write cursor T
  shared by all rows. Every row's tokens sit contiguously in ``[start[row], T)``; a refilled row
  gets its prompt copied to ``[T - len, T)``, so rows of different ages share one cursor. Rows
  keep their own position ids (RoPE is applied before caching, so the cache index is irrelevant)
  and a per-row 4D mask hides everything outside ``[start[row], T]``. When T reaches L, or the
  dead prefix in front of every live row reaches the slack, the live region is shifted to the
  front of the buffers (one copy; ``defrags`` in the stats). Decode steps attend over
  ``[0, ceil((T+1)/attend_bucket)*attend_bucket)`` only, not the whole buffer (bucket 64 when
  compiled, so that few shapes are captured; 1 otherwise).
* **Continuous refilling and compaction.** Every ``sync_every`` decode steps the host reads which
  rows have finished (EOS or ``max_new_tokens``), hands their tokens out, and refills free slots
  with the next jobs as soon as ``refill_min_free`` slots are free (``refill=False``: only when all
  are free, i.e. static batching). Once no jobs are left and at most half the slots are live,
  the batch is compacted to the next power of two >= live rows (cache and state rows gathered).
  Rows that finish between two syncs idle until the next sync (their output is already fixed).
* **Compiled decode (flag ``compile``, default: on only on CUDA).** The decode forward
  (``model(...)`` on one token per row against the ``SlotCache``) goes through
  ``torch.compile(mode="reduce-overhead")``, i.e. Inductor kernels replayed as CUDA graphs; cache
  buffers and the cursor are static addresses updated in place. Shapes change only when the
  attention bucket grows or the batch is compacted: dynamo compiles the first step with a static
  view, then one graph with a dynamic view and one with a dynamic batch (a batch of one may add
  one); CUDA graphs are re-recorded per distinct shape. The buffer has one spare bucket past its
  logical length, so a view never spans the whole buffer (that slice compiled a graph of its own
  per batch size). ``compile=True`` also runs on CPU (Inductor's C++ backend, no CUDA graphs):
  the test suite checks its tokens against eager and bounds its graph count there.
  Prefill and sampling stay eager. For SDPA models the engine temporarily switches the model to
  an attention function that, for one query token, packs the query heads of each KV-head group
  (GQA) instead of repeating K/V (HF's SDPA path repeats K/V when compiled), and restores the
  model's implementation afterwards. On CPU the very same code runs without compile.
* **Sampling** follows HF's processors exactly: optional ``min_new_tokens`` (EOS at -inf), then
  temperature, top-k (ties with the k-th value kept), top-p (HF's sort / cumsum rule), softmax
  and ``torch.multinomial`` on float32 logits; greedy is argmax. One ``torch.Generator`` seeded
  once per run drives all draws, so a run is reproducible for a fixed (prompts, num_samples,
  slots, device); the draws are not the ones plain ``generate`` would make (same distribution,
  different random stream).

Not done: paged / block KV (slots are whole-length rows), prefix sharing across *different*
prompts, speculative decoding, compiling prefill or the sampling step, models whose cache is not
plain full attention (sliding window, linear attention), flash-attention-2 / flex attention
(auto mode falls back to ``generate`` for those, see ``check_support``).
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

try:  # transformers >= 5 (cache layers)
    from transformers import AttentionInterface
    from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache, DynamicLayer
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    _IMPORT_ERROR = None
except ImportError as error:  # pragma: no cover - exercised only with old transformers
    _IMPORT_ERROR = error
    Cache = CacheLayerMixin = object  # type: ignore[misc,assignment]

DECODE_ATTENTION = "easy2hard_sdpa"
# The KV-cache argument of a model's forward: transformers 5.24 renamed ``past_key_values`` to
# ``cache`` (the old name stays a deprecated alias until 5.40); the engine passes whichever it has.
CACHE_ARGUMENTS = ("cache", "past_key_values")
SUPPORTED_ATTENTION = ("sdpa", "eager", DECODE_ATTENTION)

# generation_config settings that make HF's generate add a logits processor this engine does not apply
_NEUTRAL_GENERATION = {
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "sequence_bias": (None,),
    "no_repeat_ngram_size": (None, 0),
    "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "remove_invalid_values": (None, False),
    "exponential_decay_length_penalty": (None,),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "guidance_scale": (None, 1, 1.0),
    "min_p": (None,),
    "top_h": (None,),
    "typical_p": (None, 1.0),
    "epsilon_cutoff": (None, 0.0),
    "eta_cutoff": (None, 0.0),
    "watermarking_config": (None,),
}


@dataclass
class SamplingParams:
    """What to sample; the meaning of each field is the one of HF's ``generate`` argument."""

    max_new_tokens: int
    eos_token_id: int | None
    greedy: bool = False
    temperature: float | None = 1.0
    top_k: int | None = 0
    top_p: float | None = 1.0
    min_new_tokens: int = 0
    seed: int = 0


@dataclass
class EngineOptions:
    num_slots: int = 64  # concurrent sequences (rows of the KV cache)
    compile: bool | None = None  # torch.compile(mode="reduce-overhead") decode; None: on iff CUDA
    compile_backend: str = "inductor"  # "eager" / "aot_eager" trace with dynamo only (tests on CPU)
    refill: bool = True  # continuous refilling; False = static batches (refill only when all slots are free)
    refill_min_free: int | None = None  # refill once this many slots are free; None: max(1, num_slots // 8)
    compact: bool = True  # shrink the batch to a power of two when the work runs out
    sync_every: int | None = None  # decode steps between host syncs; None: 8 on CUDA, 1 elsewhere
    # decode attends over the cache rounded up to this many slots (0: whole cache); None: 64 when the
    # decode step is compiled (few shapes to capture), else 1 (decode is bound by reading the cache)
    attend_bucket: int | None = None
    slack: int | None = None  # extra cache length; None: max(64, max_new_tokens // 4)
    prefill_tokens: int = 32768  # padded prompt tokens per prefill forward
    memory_fraction: float = 0.8  # CUDA: fewer slots when their KV cache would not fit in this much free memory


@dataclass
class EngineStats:
    slots: int = 0  # rows of the KV cache at the start of the run
    prefill_calls: int = 0
    prefilled_prompts: int = 0  # prompts run through prefill (== prompts when each is prefilled once)
    refills: int = 0
    decode_steps: int = 0
    slot_steps: int = 0  # sum over decode steps of the batch size
    generated_tokens: int = 0  # kept tokens (up to EOS), first tokens included
    first_tokens: int = 0  # tokens drawn from prefill logits
    compactions: int = 0
    defrags: int = 0
    batch_sizes: list = field(default_factory=list)  # the batch size after each change

    @property
    def utilization(self) -> float:
        """Fraction of decoded row-steps that produced a kept token."""
        return (self.generated_tokens - self.first_tokens) / self.slot_steps if self.slot_steps else 0.0

    def count_decode_step(self, batch_size: int) -> None:
        self.decode_steps += 1
        self.slot_steps += batch_size
        if not self.batch_sizes or self.batch_sizes[-1] != batch_size:
            self.batch_sizes.append(batch_size)


# ------------------------------------------------------------------------------------- sampling


def warp_logits(
    scores: torch.Tensor, temperature: float | None, top_k: int | None, top_p: float | None
) -> torch.Tensor:
    """HF's TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper (min_tokens_to_keep=1), in
    HF's order, on float32 scores [rows, vocab]."""
    if temperature is not None and temperature != 1.0:
        scores = scores / temperature
    if top_k:
        k = min(top_k, scores.size(-1))
        kth = torch.topk(scores, k).values[..., -1, None]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    if top_p is not None and top_p < 1.0:
        sorted_scores, sorted_indices = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - top_p)
        remove_sorted[..., -1:] = False
        remove = remove_sorted.scatter(1, sorted_indices, remove_sorted)
        scores = scores.masked_fill(remove, -float("inf"))
    return scores


def next_tokens(logits: torch.Tensor, params: SamplingParams, generated: torch.Tensor, generator) -> torch.Tensor:
    """One token per row from float32 logits; ``generated`` = tokens each row has produced so far."""
    if params.min_new_tokens and params.eos_token_id is not None:
        eos = params.eos_token_id
        logits[:, eos] = torch.where(generated < params.min_new_tokens, -float("inf"), logits[:, eos])
    if params.greedy:
        return logits.argmax(dim=-1)
    scores = warp_logits(logits, params.temperature, params.top_k, params.top_p)
    probs = scores.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


# ---------------------------------------------------------------------------------- attention


def _decode_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """HF's SDPA attention, except that one query token attends with its query heads packed per
    KV head ([b, kv_heads, group, d]) instead of K/V repeated per query head."""
    batch, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    if q_len != 1 or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    packed = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    output = torch.nn.functional.scaled_dot_product_attention(
        packed, key, value, attn_mask=attention_mask, scale=scaling
    )
    return output.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


if _IMPORT_ERROR is None:
    AttentionInterface.register(DECODE_ATTENTION, _decode_sdpa)


# -------------------------------------------------------------------------------------- cache


class SlotLayer(CacheLayerMixin):
    """One layer's static buffers; writes at the shared cursor, returns the attended prefix."""

    is_compileable = True
    is_sliding = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, owner: "SlotCache"):
        super().__init__()
        self.keys, self.values, self.owner = keys, values, owner
        self.is_initialized = True

    def lazy_initialization(self, key_states, value_states) -> None:  # allocated up front
        pass

    def update(self, key_states, value_states, *args, **kwargs):
        self.keys.index_copy_(2, self.owner.cursor, key_states)
        self.values.index_copy_(2, self.owner.cursor, value_states)
        n = self.owner.view_len
        return self.keys[:, :, :n], self.values[:, :, :n]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.view_len, 0

    def get_seq_length(self) -> int:
        return self.owner.view_len

    def get_max_length(self) -> int:
        return self.keys.shape[2]


class SlotCache(Cache):
    """Static KV buffers [slots, kv_heads, length, head_dim] per layer and one write cursor."""

    def __init__(self, shapes: list[tuple], length: int, slots: int, dtype, device, static: bool):
        self.cursor = torch.zeros(1, dtype=torch.long, device=device)
        self.view_len = length
        self.static = static
        layers = []
        for heads, key_dim, value_dim in shapes:
            keys = torch.zeros(slots, heads, length, key_dim, dtype=dtype, device=device)
            values = torch.zeros(slots, heads, length, value_dim, dtype=dtype, device=device)
            layers.append(SlotLayer(keys, values, self))
        super().__init__(layers=layers)
        self._mark_static()

    def _mark_static(self):
        if self.static:
            torch._dynamo.mark_static_address(self.cursor)
            for layer in self.layers:
                torch._dynamo.mark_static_address(layer.keys)
                torch._dynamo.mark_static_address(layer.values)

    @property
    def length(self) -> int:
        return self.layers[0].keys.shape[2]

    def select_rows(self, rows: torch.Tensor) -> None:
        for layer in self.layers:
            layer.keys = layer.keys.index_select(0, rows)
            layer.values = layer.values.index_select(0, rows)
        self._mark_static()

    def shift_left(self, shift: int, end: int) -> None:
        """Move cache positions [shift, end) to [0, end - shift)."""
        for layer in self.layers:
            for buffer in (layer.keys, layer.values):
                buffer[:, :, : end - shift].copy_(buffer[:, :, shift:end].clone())


# ------------------------------------------------------------------------------------- checks


def cache_argument(model) -> str | None:
    """The name under which ``model.forward`` takes its KV cache (None: it takes none)."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in CACHE_ARGUMENTS if name in parameters), None)


@dataclass(frozen=True)
class Unsupported:
    """Why the engine cannot reproduce ``model.generate`` for a model.

    ``by_design``: the model is one the engine does not aim to reproduce (encoder-decoder, sliding
    window or linear attention, flash / flex attention, a logits processor in its generation
    config). Otherwise the model is a plain decoder the engine is meant to run and the environment
    stopped it (a transformers without cache layers, a forward signature it does not know): a
    fallback then is a bug to report, not a property of the model.
    """

    reason: str
    by_design: bool


def check_support(model) -> Unsupported | None:
    """None when the engine reproduces ``model.generate`` for this model; else why not."""
    if _IMPORT_ERROR is not None:
        return Unsupported(f"transformers without cache layers ({_IMPORT_ERROR})", by_design=False)
    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return Unsupported("encoder-decoder model", by_design=True)
    attention = getattr(config, "_attn_implementation", None)
    if attention not in SUPPORTED_ATTENTION:
        return Unsupported(f"attention implementation {attention!r} (supported: sdpa, eager)", by_design=True)
    try:
        layers = DynamicCache(config=config).layers
    except Exception as error:  # noqa: BLE001 - any failure means: not a plain decoder cache
        return Unsupported(f"cannot build its cache ({error})", by_design=False)
    if layers and any(type(layer) is not DynamicLayer for layer in layers):
        return Unsupported("not plain full attention (sliding-window or linear-attention layers)", by_design=True)
    parameters = set(inspect.signature(model.forward).parameters)
    if cache_argument(model) is None or not {"position_ids", "attention_mask"} <= parameters:
        return Unsupported(
            f"its forward takes no position_ids / attention_mask / {' or '.join(CACHE_ARGUMENTS)}", by_design=False
        )
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        for name, neutral in _NEUTRAL_GENERATION.items():
            if getattr(generation, name, None) not in neutral:
                return Unsupported(
                    f"generation_config.{name}={getattr(generation, name)!r} (a logits processor the engine lacks)",
                    by_design=True,
                )
    return None


def fit_slots(requested: int, bytes_per_slot: int, free_bytes: int, fraction: float, multiple: int = 1) -> int:
    """Slots whose KV cache fits in ``fraction`` of the free memory (rounded down to ``multiple``)."""
    fit = int(free_bytes * fraction) // max(1, bytes_per_slot)
    if fit >= requested:
        return requested
    if fit >= multiple:
        fit -= fit % multiple
    return max(1, fit)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


# ------------------------------------------------------------------------------------ run steps
# One run is a loop over these steps (SamplingEngine._run): sync (harvest_finished, compact_slots,
# refill, shift_cache) every `sync_every` decode steps, and decode_one_token in between. The state
# they share is passed explicitly: RunPlan (fixed for the run), SlotState (per slot), JobQueue.


@dataclass(frozen=True)
class RunPlan:
    """What stays fixed during one run."""

    prompts: list[list[int]]
    num_samples: int
    params: SamplingParams
    pad_id: int
    slots: int  # slots at the start (compaction shrinks SlotState, not this)
    refill_min: int  # free slots that trigger a refill (continuous refilling)
    max_prompt: int
    slack: int
    length: int  # the write cursor stays below this
    capacity: int  # cache positions allocated: length + one spare attention bucket when compiled


@dataclass
class SlotState:
    """Per-slot decoding state: tensors on the device, job bookkeeping on the host (no syncs)."""

    tokens: torch.Tensor  # [slots, max_new] generated tokens (pad past the end)
    generated: torch.Tensor  # [slots] tokens generated so far
    live: torch.Tensor  # [slots] bool: still generating
    last_token: torch.Tensor  # [slots] fed at the next decode step
    position: torch.Tensor  # [slots] its position id
    start: torch.Tensor  # [slots] first cache index the slot attends to
    job: list[int]  # job each slot serves (prompt * num_samples + sample), -1 when free
    start_host: list[int]  # host copy of `start`
    cursor: int  # next cache index written, shared by all slots; always >= max_prompt

    @classmethod
    def empty(cls, slots: int, max_new: int, pad_id: int, cursor: int, device) -> "SlotState":
        return cls(
            tokens=torch.full((slots, max_new), pad_id, dtype=torch.long, device=device),
            generated=torch.zeros(slots, dtype=torch.long, device=device),
            live=torch.zeros(slots, dtype=torch.bool, device=device),
            last_token=torch.full((slots,), pad_id, dtype=torch.long, device=device),
            position=torch.zeros(slots, dtype=torch.long, device=device),
            start=torch.zeros(slots, dtype=torch.long, device=device),
            job=[-1] * slots,
            start_host=[0] * slots,
            cursor=cursor,
        )

    @property
    def slots(self) -> int:
        return len(self.job)

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def free_slots(self) -> list[int]:
        return [b for b in range(self.slots) if self.job[b] < 0]

    def busy_slots(self) -> list[int]:
        return [b for b in range(self.slots) if self.job[b] >= 0]


@dataclass
class JobQueue:
    """Jobs handed out in order (N consecutive jobs per prompt); results yielded per prompt, in order."""

    num_prompts: int
    num_samples: int
    next_job: int = 0
    next_prompt: int = 0  # the next prompt to yield
    results: dict[int, list] = field(default_factory=dict)  # prompt -> its samples' tokens
    remaining: dict[int, int] = field(default_factory=dict)  # prompt -> samples not finished yet

    @property
    def jobs_left(self) -> int:
        return self.num_prompts * self.num_samples - self.next_job

    @property
    def all_yielded(self) -> bool:
        return self.next_prompt >= self.num_prompts

    def take(self, count: int) -> list[int]:
        jobs = list(range(self.next_job, self.next_job + min(count, self.jobs_left)))
        self.next_job += len(jobs)
        return jobs

    def finish(self, job: int, tokens: list[int]) -> None:
        prompt_index, sample = divmod(job, self.num_samples)
        self.results.setdefault(prompt_index, [None] * self.num_samples)[sample] = tokens
        self.remaining[prompt_index] = self.remaining.get(prompt_index, self.num_samples) - 1

    def pop_ready(self) -> Iterator[list[list[int]]]:
        """The samples of each prompt whose samples have all finished, up to the first that has not."""
        while not self.all_yielded and self.remaining.get(self.next_prompt, self.num_samples) == 0:
            self.remaining.pop(self.next_prompt)
            yield self.results.pop(self.next_prompt)
            self.next_prompt += 1


def should_refill(free: int, busy: int, jobs_left: int, continuous: bool, min_free: int) -> bool:
    """Refill when all slots are free, or (continuous refilling) enough are: ``min_free``, or all
    the jobs left."""
    if not jobs_left or not free:
        return False
    return busy == 0 or (continuous and free >= min(min_free, jobs_left))


def prefill_chunks(prompts: Sequence[Sequence[int]], first: int, last: int, max_tokens: int) -> list[list[int]]:
    """Prompt indices first..last grouped for prefill: each group's padded size (its widest prompt
    x its prompts) stays within ``max_tokens`` unless it is a single prompt."""
    chunks: list[list[int]] = [[]]
    for prompt_index in range(first, last + 1):
        chunk = chunks[-1]
        width = max([len(prompts[i]) for i in chunk + [prompt_index]])
        if chunk and width * (len(chunk) + 1) > max_tokens:
            chunks.append([])
        chunks[-1].append(prompt_index)
    return chunks


def place_chunk(chunk: list[int], assigned: dict[int, int], num_samples: int) -> tuple[list[int], list[int], list[int]]:
    """(prefill rows, slots, jobs): the slot each assigned job of the chunk's prompts goes to, and
    the prefill row (index into ``chunk``) its prompt is in."""
    rows, slots, jobs = [], [], []
    for row, prompt_index in enumerate(chunk):
        for sample in range(num_samples):
            job = prompt_index * num_samples + sample
            if job in assigned:
                rows.append(row)
                slots.append(assigned[job])
                jobs.append(job)
    return rows, slots, jobs


def assign_jobs(state: SlotState, slots: list[int], jobs: list[int], prompt_lengths: list[int]) -> None:
    """Host bookkeeping for refilled slots: the job each serves; its prompt ends at the cursor."""
    for slot, job, length in zip(slots, jobs, prompt_lengths):
        state.job[slot] = job
        state.start_host[slot] = state.cursor - length


def copy_prompts_into_slots(
    cache: SlotCache, prefill_cache, valid: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor, cursor: int
) -> None:
    """Copy left-padded prefill keys/values (``rows``) into ``slots`` so that they end at the
    cursor; pad positions become zeros."""
    width = valid.shape[1]
    keep = valid[rows][:, None, :, None]
    for layer, source in zip(cache.layers, prefill_cache.layers):
        layer.keys[slots, :, cursor - width : cursor] = torch.where(keep, source.keys[rows], 0)
        layer.values[slots, :, cursor - width : cursor] = torch.where(keep, source.values[rows], 0)


def start_slots(
    state: SlotState,
    slots: torch.Tensor,
    prompt_lengths: torch.Tensor,
    first_tokens: torch.Tensor,
    max_new: int,
    eos: int | None,
) -> None:
    """Device state of refilled slots after their first token (drawn from the prefill logits)."""
    state.tokens[slots, 0] = first_tokens
    state.generated[slots] = 1
    done = torch.full_like(first_tokens, max_new <= 1, dtype=torch.bool)
    if eos is not None:
        done |= first_tokens == eos
    state.live[slots] = ~done
    state.last_token[slots] = first_tokens
    state.position[slots] = prompt_lengths
    state.start[slots] = state.cursor - prompt_lengths


def attention_view_len(cursor: int, capacity: int, bucket: int) -> int:
    """Cache positions a decode step attends over: the cursor rounded up to ``bucket`` (0: all)."""
    return capacity if bucket <= 0 else min(capacity, -(-(cursor + 1) // bucket) * bucket)


def decode_mask(state: SlotState, cache_index: torch.Tensor, view_len: int) -> torch.Tensor:
    """Boolean [slots, view_len]: each slot sees its own tokens, ``[start, cursor]``."""
    index = cache_index[:view_len][None, :]
    return (index >= state.start[:, None]) & (index <= state.cursor)


def append_tokens(state: SlotState, chosen: torch.Tensor, max_new: int, eos: int | None) -> None:
    """Record one decode step's tokens: live slots keep theirs (finished ones rewrite what they
    had, so no host sync is needed); EOS or ``max_new`` tokens finish a slot."""
    slot_index = state.generated.clamp(max=max_new - 1)[:, None]
    kept = torch.where(state.live[:, None], chosen[:, None], state.tokens.gather(1, slot_index))
    state.tokens.scatter_(1, slot_index, kept)
    state.generated.add_(state.live.long())
    state.position.add_(state.live.long())
    finished = state.generated >= max_new
    if eos is not None:
        finished |= chosen == eos
    state.live &= ~finished
    state.last_token.copy_(chosen)
    state.cursor += 1


def harvest_finished(
    state: SlotState, queue: JobQueue, stats: EngineStats, on_finished: Callable[[int], None] | None = None
) -> int:
    """Hand the tokens of finished slots to the queue and free those slots; returns how many."""
    finished = [b for b, flag in enumerate(state.live.tolist()) if not flag and state.job[b] >= 0]
    if not finished:
        return 0
    index = torch.tensor(finished, device=state.device)
    counts = state.generated[index].tolist()
    rows = state.tokens[index].tolist()
    for b, count, row in zip(finished, counts, rows):
        queue.finish(state.job[b], row[:count])
        stats.generated_tokens += count
        state.job[b] = -1
        state.start_host[b] = state.cursor  # idle slots attend to their own position only
    state.start[index] = state.cursor
    if on_finished is not None:
        on_finished(len(finished))
    return len(finished)


def compact_slots(state: SlotState, cache: SlotCache, stats: EngineStats) -> bool:
    """Shrink the batch (state rows and cache rows) to the next power of two >= busy slots, when
    that halves it at least; returns whether it did."""
    busy = state.busy_slots()
    target = _next_pow2(len(busy))
    if not busy or target > state.slots // 2:
        return False
    idle = state.free_slots()[: target - len(busy)]
    keep = busy + idle
    index = torch.tensor(keep, device=state.device)
    state.tokens, state.generated, state.live, state.last_token, state.position, state.start = (
        t.index_select(0, index)
        for t in (state.tokens, state.generated, state.live, state.last_token, state.position, state.start)
    )
    state.job = [state.job[b] for b in keep]
    state.start_host = [state.start_host[b] for b in keep]
    cache.select_rows(index)
    stats.compactions += 1
    return True


def shift_cache(
    state: SlotState, cache: SlotCache, max_prompt: int, slack: int, force: bool, stats: EngineStats
) -> bool:
    """Move the live cache region to the front when the dead prefix before every busy slot reaches
    ``slack`` (or, ``force``, whenever there is one; the cursor is at the end); returns whether it did."""
    busy_starts = [state.start_host[b] for b in state.busy_slots()]
    # the cursor never goes below max_prompt: a refilled prompt is copied to end at it
    shift = min(min(busy_starts, default=state.cursor), state.cursor - max_prompt)
    if shift <= 0 or not (force or shift >= slack):
        return False
    cache.shift_left(shift, state.cursor)
    state.start_host = [max(0, s - shift) for s in state.start_host]
    state.start.sub_(shift).clamp_(min=0)
    state.cursor -= shift
    stats.defrags += 1
    return True


# -------------------------------------------------------------------------------------- engine


class SamplingEngine:
    """Samples ``num_samples`` continuations of each prompt; see the module docstring."""

    def __init__(self, model, options: EngineOptions | None = None):
        unsupported = check_support(model)
        if unsupported is not None:
            raise ValueError(f"sampling engine: unsupported model: {unsupported.reason}")
        self.model = model
        self.options = options or EngineOptions()
        self.device = next(model.parameters()).device
        self.compile = self.options.compile if self.options.compile is not None else self.device.type == "cuda"
        self.sync_every = self.options.sync_every or (8 if self.device.type == "cuda" else 1)
        bucket = self.options.attend_bucket
        self.attend_bucket = bucket if bucket is not None else (64 if self.compile else 1)
        self.cache: SlotCache | None = None
        self.stats = EngineStats()
        self._compiled = None
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._cache_argument = cache_argument(model)

    # -- model calls ------------------------------------------------------------------------

    def _decode_forward(self, input_ids, position_ids, attention_mask):
        output = self.model(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            use_cache=True,
            **{self._cache_argument: self.cache},
        )
        return output.logits[:, -1, :]

    def _decode(self, input_ids, position_ids, attention_mask) -> torch.Tensor:
        if not self.compile:
            return self._decode_forward(input_ids, position_ids, attention_mask).float()
        if self._compiled is None:
            # a few shapes per run (attention buckets, compaction); older torch calls it cache_size_limit
            dynamo_config = torch._dynamo.config
            limit = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
            setattr(dynamo_config, limit, max(getattr(dynamo_config, limit), 64))
            mode = "reduce-overhead" if self.options.compile_backend == "inductor" else None
            self._compiled = torch.compile(self._decode_forward, backend=self.options.compile_backend, mode=mode)
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        # copy out of the CUDA graph's output buffer before the next replay overwrites it
        return self._compiled(input_ids, position_ids, attention_mask).to(torch.float32, copy=True)

    def _fit_slots(self, slots: int, length: int, num_samples: int) -> int:
        """CUDA: fewer slots if their KV cache (+ float32 sampling temporaries) would not fit."""
        config = self.model.config.get_text_config(decoder=True)
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        element = next(self.model.parameters()).element_size()
        per_slot = 2 * config.num_hidden_layers * kv_heads * head_dim * length * element + 16 * config.vocab_size
        free, _ = torch.cuda.mem_get_info(self.device)
        if self.cache is not None:  # our previous buffers are reused or freed
            free += sum(t.numel() * t.element_size() for layer in self.cache.layers for t in (layer.keys, layer.values))
        fitted = fit_slots(slots, per_slot, free, self.options.memory_fraction, multiple=num_samples)
        if fitted < slots:
            warnings.warn(f"sampling engine: {slots} slots do not fit in GPU memory; using {fitted}", stacklevel=2)
        return fitted

    def _mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """Boolean [rows, 1, q, k] (True = attend) in the form the attention implementation wants."""
        if self.model.config._attn_implementation == "eager":
            dtype = next(self.model.parameters()).dtype
            zero = torch.zeros((), dtype=dtype, device=allowed.device)
            return torch.where(allowed, zero, torch.finfo(dtype).min)
        return allowed

    def _prefill(self, prompts: list[list[int]], pad_id: int):
        """Left-padded forward over distinct prompts: (DynamicCache, float32 last-token logits
        [rows, vocab], validity mask [rows, width])."""
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        valid = torch.zeros((len(prompts), width), dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            valid[row, width - len(prompt) :] = True
        ids, valid = ids.to(self.device), valid.to(self.device)
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
        # pads attend to themselves only, so no row of the mask is empty (finite values everywhere)
        allowed = (causal[None] & valid[:, None, :]) | torch.eye(width, dtype=torch.bool, device=self.device)[None]
        cache = DynamicCache(config=self.model.config)
        kwargs = {"logits_to_keep": 1} if self._keeps_logits else {}
        output = self.model(
            input_ids=ids,
            attention_mask=self._mask(allowed[:, None]),
            position_ids=positions,
            use_cache=True,
            **{self._cache_argument: cache},
            **kwargs,
        )
        self.stats.prefill_calls += 1
        self.stats.prefilled_prompts += len(prompts)
        return cache, output.logits[:, -1, :].float(), valid

    # -- the run ------------------------------------------------------------------------------

    def run(
        self,
        prompts: Sequence[Sequence[int]],
        num_samples: int,
        params: SamplingParams,
        pad_token_id: int | None = None,
        on_finished: Callable[[int], None] | None = None,
    ) -> Iterator[list[list[int]]]:
        """Yield, for each prompt in order, its ``num_samples`` generated token lists (each ends
        at and includes EOS, or has ``max_new_tokens`` tokens)."""
        prompts = [list(p) for p in prompts]
        if any(not p for p in prompts):
            raise ValueError("sampling engine: empty prompt")
        if not prompts or num_samples < 1:
            return
        if params.max_new_tokens < 1:
            for _ in prompts:
                yield [[] for _ in range(num_samples)]
            return
        model_attention = self.model.config._attn_implementation
        switch = model_attention == "sdpa"
        if switch:
            self.model.set_attn_implementation(DECODE_ATTENTION)
        try:
            with torch.inference_mode():
                yield from self._run(prompts, num_samples, params, pad_token_id, on_finished)
        finally:
            if switch:
                self.model.set_attn_implementation(model_attention)

    def _run(self, prompts, num_samples, params, pad_token_id, on_finished):
        plan = self._plan(prompts, num_samples, params, pad_token_id)
        generator = torch.Generator(device=self.device).manual_seed(params.seed)
        self.stats = EngineStats(slots=plan.slots)
        state = SlotState.empty(plan.slots, params.max_new_tokens, plan.pad_id, plan.max_prompt, self.device)
        queue = JobQueue(len(prompts), num_samples)
        cache_index = torch.arange(plan.capacity, device=self.device)
        steps_since_sync = self.sync_every
        while True:
            if steps_since_sync >= self.sync_every or state.cursor >= plan.length:
                self._sync(state, queue, plan, generator, on_finished)
                yield from queue.pop_ready()
                steps_since_sync = 0
                if queue.all_yielded:
                    break
                if not state.busy_slots():  # nothing live and nothing left to refill
                    raise RuntimeError("sampling engine: stalled with unfinished prompts")  # pragma: no cover
            assert state.cursor < plan.length
            self._decode_one_token(state, plan, generator, cache_index)
            steps_since_sync += 1
            self.stats.count_decode_step(state.slots)

    def _plan(self, prompts, num_samples, params, pad_token_id) -> RunPlan:
        opts, max_new, eos = self.options, params.max_new_tokens, params.eos_token_id
        max_prompt = max(len(p) for p in prompts)
        slack = opts.slack if opts.slack is not None else max(64, max_new // 4)
        length = max_prompt + max_new + slack
        # Compiled: one spare bucket past `length`, so the attended view never spans the whole
        # buffer (a slice to the full size is a shape of its own: one more graph per batch size).
        capacity = length + (self.attend_bucket if self.compile and self.attend_bucket > 0 else 0)
        slots = max(1, min(opts.num_slots, len(prompts) * num_samples))
        if self.device.type == "cuda":
            slots = self._fit_slots(slots, capacity, num_samples)
        return RunPlan(
            prompts=prompts,
            num_samples=num_samples,
            params=params,
            pad_id=pad_token_id if pad_token_id is not None else (eos if eos is not None else 0),
            slots=slots,
            refill_min=opts.refill_min_free or max(1, slots // 8),
            max_prompt=max_prompt,
            slack=slack,
            length=length,
            capacity=capacity,
        )

    def _sync(self, state: SlotState, queue: JobQueue, plan: RunPlan, generator, on_finished) -> None:
        """Host sync: hand out finished sequences, shrink the batch once no jobs are left, refill
        free slots, shift the cache."""
        harvest_finished(state, queue, self.stats, on_finished)
        if self.options.compact and not queue.jobs_left:
            compact_slots(state, self.cache, self.stats)
        free = state.free_slots()
        if should_refill(len(free), state.slots - len(free), queue.jobs_left, self.options.refill, plan.refill_min):
            self._refill(state, queue, free, plan, generator)
        if self.cache is not None:
            shift_cache(state, self.cache, plan.max_prompt, plan.slack, state.cursor >= plan.length, self.stats)

    def _refill(self, state: SlotState, queue: JobQueue, free: list[int], plan: RunPlan, generator) -> None:
        """Start the next jobs in ``free`` slots, their distinct prompts prefilled once per chunk."""
        jobs = queue.take(len(free))
        self.stats.refills += 1
        assigned = dict(zip(jobs, free))
        first, last = jobs[0] // plan.num_samples, jobs[-1] // plan.num_samples
        for chunk in prefill_chunks(plan.prompts, first, last, self.options.prefill_tokens):
            self._start_chunk(state, chunk, assigned, plan, generator)

    def _start_chunk(
        self, state: SlotState, chunk: list[int], assigned: dict[int, int], plan: RunPlan, generator
    ) -> None:
        """Prefill the chunk's prompts, copy each into the slots assigned to its jobs, and draw
        every such slot's first token from the shared prefill logits."""
        prefill_cache, logits, valid = self._prefill([plan.prompts[i] for i in chunk], plan.pad_id)
        self._ensure_cache(prefill_cache, plan.capacity, state.slots)
        rows, slots, jobs = place_chunk(chunk, assigned, plan.num_samples)
        prompt_lengths = [len(plan.prompts[chunk[r]]) for r in rows]
        assign_jobs(state, slots, jobs, prompt_lengths)
        rows_t = torch.tensor(rows, device=self.device)
        slots_t = torch.tensor(slots, device=self.device)
        copy_prompts_into_slots(self.cache, prefill_cache, valid, rows_t, slots_t, state.cursor)
        zero = torch.zeros(len(rows), dtype=torch.long, device=self.device)
        first_tokens = next_tokens(logits[rows_t], plan.params, zero, generator)
        lengths_t = torch.tensor(prompt_lengths, device=self.device)
        start_slots(state, slots_t, lengths_t, first_tokens, plan.params.max_new_tokens, plan.params.eos_token_id)
        self.stats.first_tokens += len(rows)

    def _ensure_cache(self, prefill_cache, capacity: int, slots: int) -> None:
        """Keep the slot cache if it has this run's layout, else allocate it (from the prefill
        cache's layer shapes). Within a run it always fits: compaction shrinks it with the state."""

        def layout(layers):
            return [(layer.keys.shape[1], layer.keys.shape[3], layer.values.shape[3]) for layer in layers]

        shapes, dtype, cache = layout(prefill_cache.layers), prefill_cache.layers[0].keys.dtype, self.cache
        if (
            cache is None
            or cache.length != capacity
            or layout(cache.layers) != shapes
            or cache.layers[0].keys.shape[0] != slots
            or cache.layers[0].keys.dtype != dtype
        ):
            self.cache = None  # free the old buffers first
            cache = SlotCache(shapes, capacity, slots, dtype, self.device, static=self.compile)
        self.cache = cache

    def _decode_one_token(self, state: SlotState, plan: RunPlan, generator, cache_index: torch.Tensor) -> None:
        """One decode step: every slot feeds its last token at the shared cursor and samples the next."""
        cache = self.cache
        cache.cursor.fill_(state.cursor)
        cache.view_len = attention_view_len(state.cursor, plan.capacity, self.attend_bucket)
        allowed = decode_mask(state, cache_index, cache.view_len)
        logits = self._decode(state.last_token[:, None], state.position[:, None], self._mask(allowed[:, None, None, :]))
        chosen = next_tokens(logits, plan.params, state.generated, generator)
        append_tokens(state, chosen, plan.params.max_new_tokens, plan.params.eos_token_id)
