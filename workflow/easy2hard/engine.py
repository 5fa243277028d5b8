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
            input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
            use_cache=True, **{self._cache_argument: self.cache},
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
            input_ids=ids, attention_mask=self._mask(allowed[:, None]), position_ids=positions,
            use_cache=True, **{self._cache_argument: cache}, **kwargs,
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
        opts, device = self.options, self.device
        num_prompts, total = len(prompts), len(prompts) * num_samples
        max_new, eos = params.max_new_tokens, params.eos_token_id
        pad_id = pad_token_id if pad_token_id is not None else (eos if eos is not None else 0)
        max_prompt = max(len(p) for p in prompts)
        slack = opts.slack if opts.slack is not None else max(64, max_new // 4)
        length = max_prompt + max_new + slack
        # Compiled: one spare bucket past `length`, so the attended view never spans the whole
        # buffer (a slice to the full size is a shape of its own: one more graph per batch size).
        capacity = length + (self.attend_bucket if self.compile and self.attend_bucket > 0 else 0)
        slots = max(1, min(opts.num_slots, total))
        if device.type == "cuda":
            slots = self._fit_slots(slots, capacity, num_samples)
        generator = torch.Generator(device=device).manual_seed(params.seed)
        stats = self.stats = EngineStats(slots=slots)
        allocated: list[bool] = []  # the cache is (re)allocated on this run's first prefill

        # -- per-slot state: tensors on the device, owners / starts on the host
        tokens_out = torch.full((slots, max_new), pad_id, dtype=torch.long, device=device)
        generated = torch.zeros(slots, dtype=torch.long, device=device)
        live = torch.zeros(slots, dtype=torch.bool, device=device)
        last = torch.full((slots,), pad_id, dtype=torch.long, device=device)
        position = torch.zeros(slots, dtype=torch.long, device=device)
        start = torch.zeros(slots, dtype=torch.long, device=device)
        owner = [-1] * slots  # job id (prompt * num_samples + sample) or -1
        start_host = [0] * slots
        cursor = max_prompt  # the next cache index written; always >= max_prompt
        arange = torch.arange(capacity, device=device)

        results: dict[int, list] = {}
        remaining = {}
        next_job, next_yield = 0, 0
        refill_min = opts.refill_min_free or max(1, slots // 8)

        def allocate(prefill_cache):
            def layout(layers):
                return [(layer.keys.shape[1], layer.keys.shape[3], layer.values.shape[3]) for layer in layers]

            shapes, dtype, cache = layout(prefill_cache.layers), prefill_cache.layers[0].keys.dtype, self.cache
            if (
                cache is None or cache.length != capacity or layout(cache.layers) != shapes
                or cache.layers[0].keys.shape[0] != slots or cache.layers[0].keys.dtype != dtype
            ):
                self.cache = None  # free the old buffers first
                cache = SlotCache(shapes, capacity, slots, dtype, device, static=self.compile)
            self.cache = cache
            allocated.append(True)

        def refill(free: list[int]):
            nonlocal next_job
            jobs = list(range(next_job, min(total, next_job + len(free))))
            next_job += len(jobs)
            stats.refills += 1
            assigned = dict(zip(jobs, free))
            first, last_prompt = jobs[0] // num_samples, jobs[-1] // num_samples
            chunk: list[int] = []
            for prompt_index in range(first, last_prompt + 1):
                width = max([len(prompts[i]) for i in chunk + [prompt_index]])
                if chunk and width * (len(chunk) + 1) > opts.prefill_tokens:
                    fill(chunk, assigned)
                    chunk = []
                chunk.append(prompt_index)
            fill(chunk, assigned)

        def fill(chunk: list[int], assigned: dict[int, int]):
            prefill_cache, logits, valid = self._prefill([prompts[i] for i in chunk], pad_id)
            if not allocated:
                allocate(prefill_cache)
            width = valid.shape[1]
            rows, targets = [], []
            for row, prompt_index in enumerate(chunk):
                for sample in range(num_samples):
                    job = prompt_index * num_samples + sample
                    if job in assigned:
                        rows.append(row)
                        targets.append(assigned[job])
                        owner[assigned[job]] = job
                        start_host[assigned[job]] = cursor - len(prompts[prompt_index])
            rows_t = torch.tensor(rows, device=device)
            slots_t = torch.tensor(targets, device=device)
            keep = valid[rows_t][:, None, :, None]
            for layer, source in zip(self.cache.layers, prefill_cache.layers):
                layer.keys[slots_t, :, cursor - width : cursor] = torch.where(keep, source.keys[rows_t], 0)
                layer.values[slots_t, :, cursor - width : cursor] = torch.where(keep, source.values[rows_t], 0)
            zero = torch.zeros(len(rows), dtype=torch.long, device=device)
            first_tokens = next_tokens(logits[rows_t], params, zero, generator)
            lengths = torch.tensor([len(prompts[chunk[r]]) for r in rows], device=device)
            tokens_out[slots_t, 0] = first_tokens
            generated[slots_t] = 1
            done = torch.full_like(first_tokens, max_new <= 1, dtype=torch.bool)
            if eos is not None:
                done |= first_tokens == eos
            live[slots_t] = ~done
            last[slots_t] = first_tokens
            position[slots_t] = lengths
            start[slots_t] = cursor - lengths
            stats.first_tokens += len(rows)

        def harvest() -> int:
            finished = [b for b, flag in enumerate(live.tolist()) if not flag and owner[b] >= 0]
            if not finished:
                return 0
            index = torch.tensor(finished, device=device)
            counts = generated[index].tolist()
            rows = tokens_out[index].tolist()
            for b, count, row in zip(finished, counts, rows):
                prompt_index, sample = divmod(owner[b], num_samples)
                results.setdefault(prompt_index, [None] * num_samples)[sample] = row[:count]
                remaining[prompt_index] = remaining.get(prompt_index, num_samples) - 1
                stats.generated_tokens += count
                owner[b] = -1
                start_host[b] = cursor  # idle rows attend to their own slot only
            start[index] = cursor
            if on_finished is not None:
                on_finished(len(finished))
            return len(finished)

        def compact():
            nonlocal slots, tokens_out, generated, live, last, position, start, owner, start_host
            busy = [b for b in range(slots) if owner[b] >= 0]
            target = _next_pow2(len(busy))
            if not busy or target > slots // 2:
                return
            idle = [b for b in range(slots) if owner[b] < 0][: target - len(busy)]
            keep = busy + idle
            index = torch.tensor(keep, device=device)
            tokens_out, generated, live, last, position, start = (
                t.index_select(0, index) for t in (tokens_out, generated, live, last, position, start)
            )
            owner = [owner[b] for b in keep]
            start_host = [start_host[b] for b in keep]
            self.cache.select_rows(index)
            slots = target
            stats.compactions += 1

        def defrag(force: bool):
            nonlocal cursor
            busy = [start_host[b] for b in range(slots) if owner[b] >= 0]
            shift = min(min(busy, default=cursor), cursor - max_prompt)
            if shift <= 0 or not (force or shift >= slack):
                return
            self.cache.shift_left(shift, cursor)
            for b in range(slots):
                start_host[b] = max(0, start_host[b] - shift)
            start.sub_(shift).clamp_(min=0)
            cursor -= shift
            stats.defrags += 1

        def sync():
            harvest()
            if opts.compact and next_job >= total:
                compact()
            free = [b for b in range(slots) if owner[b] < 0]
            busy = slots - len(free)
            enough = opts.refill and len(free) >= min(refill_min, total - next_job)
            if next_job < total and free and (busy == 0 or enough):
                refill(free)
            if self.cache is not None:
                defrag(force=cursor >= length)

        def emit():
            nonlocal next_yield
            while next_yield < num_prompts and remaining.get(next_yield, num_samples) == 0:
                remaining.pop(next_yield)
                yield results.pop(next_yield)
                next_yield += 1

        steps_since_sync = self.sync_every
        while True:
            if steps_since_sync >= self.sync_every or cursor >= length:
                sync()
                yield from emit()
                steps_since_sync = 0
                if next_yield >= num_prompts:
                    break
                if all(b < 0 for b in owner):  # nothing live and nothing left to refill
                    raise RuntimeError("sampling engine: stalled with unfinished prompts")  # pragma: no cover
            assert cursor < length
            # -- one decode step: every row feeds its last token at the shared cursor
            cache = self.cache
            cache.cursor.fill_(cursor)
            bucket = self.attend_bucket
            view = capacity if bucket <= 0 else min(capacity, -(-(cursor + 1) // bucket) * bucket)
            cache.view_len = view
            allowed = (arange[:view][None, :] >= start[:, None]) & (arange[:view][None, :] <= cursor)
            logits = self._decode(last[:, None], position[:, None], self._mask(allowed[:, None, None, :]))
            chosen = next_tokens(logits, params, generated, generator)
            slot_index = generated.clamp(max=max_new - 1)[:, None]
            kept = torch.where(live[:, None], chosen[:, None], tokens_out.gather(1, slot_index))
            tokens_out.scatter_(1, slot_index, kept)
            generated.add_(live.long())
            position.add_(live.long())
            finished = generated >= max_new
            if eos is not None:
                finished |= chosen == eos
            live &= ~finished
            last.copy_(chosen)
            cursor += 1
            steps_since_sync += 1
            stats.decode_steps += 1
            stats.slot_steps += slots
            if not stats.batch_sizes or stats.batch_sizes[-1] != slots:
                stats.batch_sizes.append(slots)

