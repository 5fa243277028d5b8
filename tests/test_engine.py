"""The sampling engine (easy2hard.engine): exact greedy agreement with HF generate under prefix
sharing, refilling, compaction and cache shifts; EOS / finished / num_tokens semantics; seeding;
the sampled distribution against softmax(top-k(logits / T)) computed by hand; top-k / top-p
support; and sampling.generate / sample_solutions routed through it."""

import copy
import shutil
import warnings

import pytest
import torch
import yaml
from scipy import stats as scipy_stats
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from conftest import REPO_ROOT, TINY_SHAPE
from easy2hard import engine, modeling, sampling
from easy2hard.engine import EngineOptions, SamplingEngine, SamplingParams
from easy2hard.sampling import SamplingConfig, sample_solutions

TINY = TINY_SHAPE

# Options that make a short run go through every mechanism: few slots (refills, a prompt's
# samples split between refills), a tiny slack (cache shifts), host syncs every 3 steps
# (rows finishing between syncs), small attention buckets.
TIGHT = dict(num_slots=4, slack=2, sync_every=3, attend_bucket=8, refill_min_free=1)


@pytest.fixture(scope="module")
def data(synthetic_split):
    return synthetic_split


@pytest.fixture(scope="module")
def tokenizer(synthetic_tokenizer):
    return synthetic_tokenizer


@pytest.fixture(scope="module")
def eos_model(trained_model, tokenizer):
    """The trained model with a bias towards EOS in its output layer (which HF generate applies
    too, unlike a generation_config setting): rows end at many different lengths."""
    model = copy.deepcopy(trained_model)
    head = torch.nn.Linear(TINY["hidden_size"], len(tokenizer), bias=True)
    with torch.no_grad():
        head.weight.copy_(trained_model.lm_head.weight)
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = 4.0
    model.lm_head = head
    return model.eval()


@pytest.fixture(scope="module")
def questions(data):
    _, test = data
    chosen = [test[0], test[9], test[3], test[8], test[5], test[13]]
    assert len({len(q["problem"]) for q in chosen}) > 1  # prompts of different lengths
    return [{k: q[k] for k in ("unique_id", "problem", "level", "subject")} for q in chosen]


@pytest.fixture(scope="module")
def prompts(tokenizer, questions):
    encoded = [sampling.encode_prompt(tokenizer, q["problem"]) for q in questions]
    assert len({len(p) for p in encoded}) > 1
    return encoded


def hf_greedy(model, tokenizer, prompt, max_new_tokens):
    """Unbatched HF greedy decoding, cut after the first EOS."""
    ids = torch.tensor([prompt])
    with torch.no_grad():
        output = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    tokens = output[0, len(prompt) :].tolist()
    eos = tokenizer.eos_token_id
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def run(model, tokenizer, prompts, num_samples, params, **options):
    runner = SamplingEngine(model, EngineOptions(**options))
    groups = list(runner.run(prompts, num_samples, params, pad_token_id=tokenizer.pad_token_id))
    return groups, runner.stats


# --------------------------------------------------------------------------------------- greedy


@pytest.mark.parametrize("num_samples", [1, 3])
@pytest.mark.parametrize("options", [dict(num_slots=64), TIGHT], ids=["roomy", "tight"])
def test_greedy_equals_generate(trained_model, eos_model, tokenizer, prompts, num_samples, options):
    params = SamplingParams(max_new_tokens=40, eos_token_id=tokenizer.eos_token_id, greedy=True)
    for model in (trained_model, eos_model):
        expected = [hf_greedy(model, tokenizer, p, 40) for p in prompts]
        assert len({tuple(e) for e in expected}) >= 3  # prompt-dependent
        # Both stopping rules occur, so both are compared.
        assert {e[-1] == tokenizer.eos_token_id for e in expected} == {True, False}
        groups, stats = run(model, tokenizer, prompts, num_samples, params, **options)
        assert len(groups) == len(prompts)
        for group, reference in zip(groups, expected):
            assert group == [reference] * num_samples
        if options is TIGHT:
            assert stats.refills > 1 and stats.defrags > 0
        else:  # every prompt prefilled once and shared by its samples
            assert stats.prefill_calls == 1 and stats.prefilled_prompts == len(prompts)


def test_greedy_equals_batched_left_padded_generate(trained_model, tokenizer, prompts):
    """Also against one left-padded HF batch (what sampling.generate's hf path runs)."""
    batch = sampling._left_pad(prompts, tokenizer.pad_token_id, "cpu")
    with torch.no_grad():
        output = trained_model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=30,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )[:, batch["input_ids"].shape[1] :]
    params = SamplingParams(max_new_tokens=30, eos_token_id=tokenizer.eos_token_id, greedy=True)
    groups, _ = run(trained_model, tokenizer, prompts, 2, params, num_slots=5)
    assert len(groups) == len(prompts)
    for group, row in zip(groups, output.tolist()):
        for tokens in group:
            assert tokens == row[: len(tokens)]
            assert len(tokens) == 30 or tokens[-1] == tokenizer.eos_token_id


def test_generate_dicts_identical_to_hf_path(trained_model, tokenizer, prompts):
    """sampling.generate through the engine gives the hf path's dicts (greedy: exactly)."""
    config = dict(greedy=True, max_new_tokens=40, batch_size=4)
    hf = list(
        sampling.generate(trained_model, tokenizer, prompts, SamplingConfig(**config, engine="hf"), progress=False)
    )
    ours = list(
        sampling.generate(trained_model, tokenizer, prompts, SamplingConfig(**config, engine="engine"), progress=False)
    )
    assert ours == hf
    flat = [c for group in ours for c in group]
    assert {c["finished"] for c in flat} == {True, False}
    assert all(set(c) == {"text", "token_ids", "num_tokens", "finished"} for c in flat)
    assert all(len(c["token_ids"]) == c["num_tokens"] for c in flat)


# ------------------------------------------------------------------------------ EOS and layout


def test_eos_finished_and_num_tokens(eos_model, tokenizer, prompts, monkeypatch):
    """Sampled rows stop at EOS; the dicts carry the hf path's semantics for every row."""
    seen = []
    original = SamplingEngine.run

    def spy(self, *args, **kwargs):
        for group in original(self, *args, **kwargs):
            seen.append(group)
            yield group
        seen.append(self.stats)

    monkeypatch.setattr(SamplingEngine, "run", spy)
    config = SamplingConfig(
        num_samples=5, temperature=1.0, top_k=0, max_new_tokens=12, batch_size=10, seed=0, engine="engine"
    )
    outputs = list(sampling.generate(eos_model, tokenizer, prompts, config, progress=False))
    *groups, stats = seen
    assert len(outputs) == len(groups) == len(prompts)
    eos = tokenizer.eos_token_id
    for group, dicts in zip(groups, outputs):
        assert len(group) == len(dicts) == 5
        for tokens, row in zip(group, dicts):
            assert 1 <= len(tokens) <= 12
            assert eos not in tokens[:-1]  # nothing after EOS
            assert row["finished"] == (tokens[-1] == eos)
            assert row["num_tokens"] == len(tokens)
            if not row["finished"]:
                assert row["num_tokens"] == 12
            assert row["text"] == tokenizer.decode(tokens, skip_special_tokens=True)
            assert tokenizer.eos_token not in row["text"] and tokenizer.pad_token not in row["text"]
    flat = [row for dicts in outputs for row in dicts]
    assert {row["finished"] for row in flat} == {True, False}
    assert len({row["num_tokens"] for row in flat}) >= 4
    # Rows of very different lengths: finished slots were refilled and the tail compacted.
    assert stats.refills > 1 and stats.compactions >= 1
    assert stats.batch_sizes[0] == 10 and stats.batch_sizes[-1] < 10


def test_sample_solutions_rows_layout(trained_model, eos_model, tokenizer, questions):
    for model, greedy in ((trained_model, True), (eos_model, False)):
        config = dict(num_samples=3, temperature=0.7, top_k=20, max_new_tokens=16, batch_size=6, seed=0, greedy=greedy)
        hf = list(sample_solutions(model, tokenizer, questions, SamplingConfig(**config, engine="hf"), progress=False))
        ours = list(
            sample_solutions(model, tokenizer, questions, SamplingConfig(**config, engine="engine"), progress=False)
        )
        layout = ("unique_id", "level", "subject", "sample_index")
        assert [tuple(r[k] for k in layout) for r in ours] == [tuple(r[k] for k in layout) for r in hf]
        assert all(set(r) == set(h) for r, h in zip(ours, hf))
        if greedy:
            assert ours == hf
        else:
            for row in ours:
                assert row["finished"] or row["num_tokens"] == 16


# -------------------------------------------------------------------------------------- seeding


def test_seeding_reproducible(eos_model, tokenizer, prompts):
    def sample(seed, **options):
        params = SamplingParams(
            max_new_tokens=16, eos_token_id=tokenizer.eos_token_id, temperature=1.0, top_k=0, seed=seed
        )
        return run(eos_model, tokenizer, prompts, 4, params, **options)[0]

    first = sample(0, num_slots=8)
    assert sample(0, num_slots=8) == first
    assert sample(0, **TIGHT) == sample(0, **TIGHT)
    other = sample(1, num_slots=8)
    flat_first = [tuple(t) for g in first for t in g]
    flat_other = [tuple(t) for g in other for t in g]
    assert sum(a != b for a, b in zip(flat_first, flat_other)) > len(flat_first) // 2
    assert all(len(set(map(tuple, group))) > 1 for group in first)  # samples of one prompt differ


# -------------------------------------------------------------------------------- distribution


@pytest.fixture(scope="module")
def peaky_model():
    """A fixed tiny random model with sharp logits (so temperature and top-k visibly matter)."""
    config = LlamaConfig(
        vocab_size=48,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
    return model


def by_hand(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """softmax(top-k(logits / T)), written out without the engine's code."""
    scaled = logits.double() / temperature
    order = sorted(range(len(scaled)), key=lambda i: -float(scaled[i]))
    keep = set(order[:top_k])
    probs = torch.zeros_like(scaled)
    total = sum(float(torch.exp(scaled[i] - scaled[order[0]])) for i in keep)
    for i in keep:
        probs[i] = float(torch.exp(scaled[i] - scaled[order[0]])) / total
    return probs


def next_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1]


def assert_matches(counts: torch.Tensor, expected: torch.Tensor):
    """Chi-square goodness of fit (bins with expected count < 5 pooled) and total variation."""
    n = counts.sum().item()
    assert counts[expected == 0].sum() == 0  # never outside the support
    order = torch.argsort(expected, descending=True)
    observed_bins, expected_bins, pooled_o, pooled_e = [], [], 0.0, 0.0
    for i in order.tolist():
        if expected[i] == 0:
            continue
        if expected[i] * n >= 5:
            observed_bins.append(float(counts[i]))
            expected_bins.append(float(expected[i]) * n)
        else:
            pooled_o += float(counts[i])
            pooled_e += float(expected[i]) * n
    if pooled_e > 0:
        observed_bins.append(pooled_o)
        expected_bins.append(pooled_e)
    scale = sum(observed_bins) / sum(expected_bins)
    p_value = scipy_stats.chisquare(observed_bins, [e * scale for e in expected_bins]).pvalue
    total_variation = 0.5 * (counts.double() / n - expected).abs().sum().item()
    assert p_value > 1e-3, (p_value, total_variation)
    assert total_variation < 0.04, total_variation


def test_sampled_tokens_follow_softmax_of_top_k(peaky_model):
    """First token (from the shared prefill) and second token (from a decode step against the
    slot cache) over 6000 samples of one prompt, against softmax(top-k(logits / T))."""
    prompt, temperature, top_k, n = [1, 7, 30, 11, 5, 19], 0.7, 20, 6000
    params = SamplingParams(max_new_tokens=2, eos_token_id=None, temperature=temperature, top_k=top_k, seed=123)
    runner = SamplingEngine(peaky_model, EngineOptions(num_slots=512, attend_bucket=4))
    (group,) = list(runner.run([prompt], n, params, pad_token_id=0))
    assert runner.stats.prefilled_prompts == runner.stats.refills  # one prefill per refill, shared by its slots
    vocab = peaky_model.config.vocab_size
    first = torch.tensor([t[0] for t in group])
    expected_first = by_hand(next_logits(peaky_model, prompt), temperature, top_k)
    assert (expected_first > 0).sum() == top_k
    assert expected_first.max() > 0.1  # a far-from-uniform target
    assert_matches(torch.bincount(first, minlength=vocab), expected_first)
    # Second token: conditional support per first token, marginal distribution as a mixture.
    conditional = {t: by_hand(next_logits(peaky_model, prompt + [t]), temperature, top_k) for t in set(first.tolist())}
    for tokens in group:
        assert conditional[tokens[0]][tokens[1]] > 0  # inside the top-k of its own step
    expected_second = sum(expected_first[t] * conditional[t] for t in conditional)
    second = torch.tensor([t[1] for t in group])
    assert_matches(torch.bincount(second, minlength=vocab), expected_second / expected_second.sum())
    # The wrong temperature is detected: the target at T=1 is rejected.
    wrong = by_hand(next_logits(peaky_model, prompt), 1.0, top_k)
    with pytest.raises(AssertionError):
        assert_matches(torch.bincount(first, minlength=vocab), wrong)


def test_top_p_support_and_distribution(peaky_model):
    prompt, n = [1, 3, 9, 4], 4000
    params = SamplingParams(max_new_tokens=1, eos_token_id=None, temperature=0.9, top_k=0, top_p=0.8, seed=5)
    (group,) = list(SamplingEngine(peaky_model, EngineOptions(num_slots=1000)).run([prompt], n, params, pad_token_id=0))
    logits = next_logits(peaky_model, prompt)[None]
    hf = TopPLogitsWarper(0.8)(None, TemperatureLogitsWarper(0.9)(None, logits))[0]
    expected = torch.softmax(hf.double(), -1)
    assert 1 < (expected > 0).sum() < len(expected)
    assert_matches(torch.bincount(torch.tensor([t[0] for t in group]), minlength=len(expected)), expected)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 20, 1.0), (1.0, 5, 0.9), (1.3, 0, 0.5), (0.5, 50, 1.0)])
def test_warp_logits_matches_hf_warpers(temperature, top_k, top_p):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 200, generator=generator) * 3
    logits[:, 10] = logits[:, 11]  # ties at arbitrary ranks
    expected = logits
    for warper in (
        TemperatureLogitsWarper(temperature),
        TopKLogitsWarper(top_k) if top_k else None,
        TopPLogitsWarper(top_p) if top_p < 1 else None,
    ):
        if warper is not None:
            expected = warper(None, expected)
    assert torch.equal(engine.warp_logits(logits, temperature, top_k, top_p), expected)


def test_top_k_support_never_violated():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5000, 300, generator=generator) * 2
    params = SamplingParams(max_new_tokens=1, eos_token_id=None, temperature=0.7, top_k=7)
    chosen = engine.next_tokens(
        logits.clone(), params, torch.zeros(5000, dtype=torch.long), torch.Generator().manual_seed(1)
    )
    allowed = torch.topk(logits, 7).indices
    assert (allowed == chosen[:, None]).any(dim=1).all()
    assert len(set(chosen.tolist())) > 250  # not degenerate


def test_min_new_tokens_suppresses_eos(eos_model, tokenizer, prompts):
    params = SamplingParams(
        max_new_tokens=10, min_new_tokens=10, eos_token_id=tokenizer.eos_token_id, temperature=1.0, top_k=0
    )
    groups, _ = run(eos_model, tokenizer, prompts, 3, params, num_slots=6)
    assert all(len(tokens) == 10 and tokenizer.eos_token_id not in tokens for g in groups for tokens in g)


# ------------------------------------------------------------------------------- routing, flags


def test_auto_mode_uses_the_engine_when_supported_and_generate_otherwise(
    trained_model, tokenizer, prompts, monkeypatch
):
    calls = []
    original = trained_model.generate
    monkeypatch.setattr(trained_model, "generate", lambda **kw: calls.append(kw) or original(**kw))
    config = SamplingConfig(num_samples=2, max_new_tokens=3, batch_size=4)
    assert sampling.use_engine(trained_model, config)  # auto, CPU, a supported model
    list(sampling.generate(trained_model, tokenizer, prompts[:2], config, progress=False))
    assert calls == []
    hf = SamplingConfig(num_samples=2, max_new_tokens=3, batch_size=4, engine="hf")
    list(sampling.generate(trained_model, tokenizer, prompts[:2], hf, progress=False))
    assert len(calls) == 1
    monkeypatch.setenv("EASY2HARD_SAMPLING_ENGINE", "hf")
    assert not sampling.use_engine(trained_model, config)
    assert sampling.use_engine(trained_model, SamplingConfig(engine="engine"))
    with pytest.raises(ValueError, match="sampling.engine"):
        sampling.use_engine(trained_model, SamplingConfig(engine="fast"))
    biased = copy.deepcopy(trained_model)
    biased.generation_config.sequence_bias = {(tokenizer.eos_token_id,): 3.0}
    unsupported = engine.check_support(biased)
    assert "sequence_bias" in unsupported.reason and unsupported.by_design
    with pytest.raises(ValueError, match="sequence_bias"):
        sampling.use_engine(biased, SamplingConfig(engine="engine"))
    monkeypatch.delenv("EASY2HARD_SAMPLING_ENGINE")
    # A model the engine does not reproduce by design: logged and recorded, not a warning.
    usage = sampling.BackendUsage()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(sampling.generate(biased, tokenizer, prompts[:2], config, progress=False, usage=usage))
    assert usage.as_record() == {
        "mode": "auto",
        "backend": "hf",
        "prompts": {"hf": 2},
        "unexpected_fallback": False,
        "fallbacks": [{"reason": unsupported.reason, "expected": True}],
    }
    # The model's attention implementation is restored after a run.
    assert trained_model.config._attn_implementation == "sdpa"


def test_fallback_on_a_model_the_engine_should_run_is_a_warning_and_recorded(
    trained_model, tokenizer, prompts, monkeypatch
):
    """What happened with transformers 5.24 (`cache=` instead of `past_key_values=`): a plain
    Llama refused for its forward signature must not be sampled by generate silently."""
    monkeypatch.setattr(engine, "CACHE_ARGUMENTS", ("kv_cache",))  # a name this forward does not take
    unsupported = engine.check_support(trained_model)
    assert unsupported is not None and not unsupported.by_design and "kv_cache" in unsupported.reason
    usage = sampling.BackendUsage()
    with pytest.warns(UserWarning, match="falling back to generate, although the engine is meant to run this model"):
        groups = list(
            sampling.generate(
                trained_model,
                tokenizer,
                prompts[:3],
                SamplingConfig(num_samples=2, max_new_tokens=3),
                progress=False,
                usage=usage,
            )
        )
    assert len(groups) == 3
    record = usage.as_record()
    assert record["backend"] == "hf" and record["prompts"] == {"hf": 3} and record["unexpected_fallback"]


@pytest.mark.parametrize("name", ["cache", "past_key_values"])
def test_the_cache_argument_is_found_under_either_name(name):
    """transformers >= 5.24 names it `cache`, older releases `past_key_values`."""
    namespace = {}
    exec(
        f"def forward(input_ids=None, attention_mask=None, position_ids=None, {name}=None, use_cache=None): pass",
        namespace,
    )

    class Model:
        forward = staticmethod(namespace["forward"])

    assert engine.cache_argument(Model()) == name


def test_offline_default_model_is_sampled_by_the_engine(synthetic_tokenizer, tmp_path):
    """The offline default's model, saved and loaded as the stages do, sampled with the default
    sampling settings: every prompt by the engine, no fallback (this fails when a transformers
    release changes an API the engine relies on, instead of `make run` quietly slowing down)."""
    defaults = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    model_config = defaults["model"]
    model = modeling.build_tiny_llama(synthetic_tokenizer, model_config["tiny"], model_config["seed"])
    model.save_pretrained(tmp_path / "base")
    synthetic_tokenizer.save_pretrained(tmp_path / "base")
    model, tokenizer = modeling.load_model(str(tmp_path / "base"))
    settings = {k: v for k, v in defaults["sampling"].items() if k not in ("num_samples", "shard_questions")}
    config = SamplingConfig(
        **{**settings, "max_new_tokens": 4}, num_samples=defaults["sampling"]["num_samples"]["test"]
    )
    assert sampling.engine_mode(config) == "auto"  # sampling.engine: null resolves to auto without the env var
    questions = [{"unique_id": str(i), "problem": f"{i} + {i + 1}", "level": 1, "subject": "s"} for i in range(3)]
    usage = sampling.BackendUsage()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rows = list(sample_solutions(model.eval(), tokenizer, questions, config, progress=False, usage=usage))
    assert len(rows) == 3 * config.num_samples
    assert usage.as_record() == {
        "mode": "auto",
        "backend": "engine",
        "prompts": {"engine": 3},
        "fallbacks": [],
        "unexpected_fallback": False,
    }


def test_compile_flag_off_on_cpu_and_traceable(trained_model, tokenizer, prompts):
    assert SamplingEngine(trained_model).compile is False
    # The decode step traces with dynamo (the 'eager' backend: no Inductor build on CPU) and
    # gives the same tokens; the CUDA path is this with Inductor + CUDA graphs.
    params = SamplingParams(max_new_tokens=12, eos_token_id=tokenizer.eos_token_id, greedy=True)
    compiled, _ = run(
        trained_model, tokenizer, prompts[:3], 2, params, num_slots=4, compile=True, compile_backend="eager"
    )
    plain, _ = run(trained_model, tokenizer, prompts[:3], 2, params, num_slots=4)
    assert compiled == plain


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("g++", "c++", "clang++")), reason="Inductor's CPU backend needs a C++ compiler"
)
def test_inductor_compiled_decode_on_cpu_matches_eager_with_bounded_recompiles(trained_model, tokenizer, prompts):
    """The CUDA path's compiled decode, built by Inductor's CPU backend (no CUDA graphs): greedy
    tokens identical to eager over a run that refills, shifts the cache and compacts the batch,
    and the decode step compiles a bounded number of graphs: the first (static view), one with a
    dynamic attention view, one with a dynamic batch; a batch of one may add one (dynamo
    specialises size 1). Before the spare bucket past the buffer, a view spanning the whole
    buffer compiled one more graph per batch size."""
    from torch._dynamo.utils import counters

    params = SamplingParams(max_new_tokens=40, eos_token_id=tokenizer.eos_token_id, greedy=True)
    options = dict(num_slots=4, slack=2, sync_every=3, attend_bucket=8, refill_min_free=1)
    plain, plain_stats = run(trained_model, tokenizer, prompts[:8], 3, params, **options)
    torch._dynamo.reset()
    counters.clear()
    try:
        compiled, stats = run(trained_model, tokenizer, prompts[:8], 3, params, compile=True, **options)
        graphs = counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()
    assert compiled == plain
    assert stats.refills > 1 and stats.defrags > 0 and stats.compactions > 0 and stats == plain_stats
    assert 2 <= graphs <= 4, f"{graphs} graphs compiled for one run"


def test_fit_slots():
    assert engine.fit_slots(512, 1000, 10**9, 0.8) == 512
    assert engine.fit_slots(512, 10**6, 100 * 10**6, 0.8) == 80
    assert engine.fit_slots(512, 10**6, 100 * 10**6, 0.8, multiple=32) == 64
    assert engine.fit_slots(512, 10**9, 10**6, 0.8) == 1


@pytest.mark.parametrize("attention,kv_heads", [("eager", 4), ("sdpa", 4), ("eager", 2)])
def test_other_attention_layouts_match_generate(attention, kv_heads):
    """Eager attention (float masks) and multi-head (no GQA) models agree with generate too."""
    config = LlamaConfig(
        vocab_size=48,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attn_implementation=attention,
    )
    torch.manual_seed(3)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
    generator = torch.Generator().manual_seed(0)
    prompts = [[1] + torch.randint(3, 48, (n,), generator=generator).tolist() for n in (4, 9, 2, 6)]

    class Tok:
        eos_token_id, pad_token_id = 2, 0

    expected = [hf_greedy(model, Tok, p, 25) for p in prompts]
    assert len({tuple(e) for e in expected}) > 1
    params = SamplingParams(max_new_tokens=25, eos_token_id=2, greedy=True)
    groups, _ = run(model, Tok, prompts, 2, params, **TIGHT)
    assert groups == [[e, e] for e in expected]
    assert model.config._attn_implementation == attention


def test_auto_falls_back_to_generate_when_the_engine_fails(trained_model, tokenizer, prompts, monkeypatch):
    """Under `auto`, an engine failure (e.g. a GPU the CUDA-graph path has not met) costs speed,
    not the run; an explicit `engine` re-raises."""
    real_run = engine.SamplingEngine.run

    def broken(self, *args, **kwargs):  # fails after answering the first prompt, like a late recompile
        results = real_run(self, *args, **kwargs)
        yield next(results)
        raise RuntimeError("graph capture failed")

    monkeypatch.setattr(engine.SamplingEngine, "run", broken)
    config = sampling.SamplingConfig(num_samples=1, greedy=True, max_new_tokens=8, batch_size=8, engine="auto")
    usage = sampling.BackendUsage()
    with pytest.warns(UserWarning, match="falling back to generate"):
        fallback = list(sampling.generate(trained_model, tokenizer, prompts[:3], config, progress=False, usage=usage))
    assert usage.prompts == {"engine": 1, "hf": 2} and usage.unexpected_fallback
    assert "graph capture failed" in usage.fallbacks[0]["reason"]
    reference = list(
        sampling.generate(
            trained_model,
            tokenizer,
            prompts[:3],
            sampling.SamplingConfig(num_samples=1, greedy=True, max_new_tokens=8, batch_size=8, engine="hf"),
            progress=False,
        )
    )
    assert fallback == reference
    with pytest.raises(RuntimeError):
        list(
            sampling.generate(
                trained_model,
                tokenizer,
                prompts[:3],
                sampling.SamplingConfig(num_samples=1, greedy=True, max_new_tokens=8, batch_size=8, engine="engine"),
                progress=False,
            )
        )
