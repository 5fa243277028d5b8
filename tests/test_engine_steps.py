"""The sampling engine's run steps (easy2hard.engine), each on a hand-built state: job queue,
refill decision, prefill chunking and placement, slot start, decode mask and view, token append,
harvest, compaction, cache shift; then one refill and one decode step on a tiny random Llama.
The whole run is checked against HF generate in test_engine.py."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from easy2hard import engine
from easy2hard.engine import EngineOptions, EngineStats, JobQueue, RunPlan, SamplingEngine, SamplingParams, SlotState

PAD = 0


def slot_state(slots=4, max_new=5, cursor=10) -> SlotState:
    return SlotState.empty(slots, max_new, PAD, cursor, "cpu")


def slot_cache(slots=4, length=12) -> engine.SlotCache:
    """One layer, one KV head, head_dim 1; keys hold their cache position + 100 * slot."""
    cache = engine.SlotCache([(1, 1, 1)], length, slots, torch.float32, "cpu", static=False)
    for buffer in (cache.layers[0].keys, cache.layers[0].values):
        buffer.copy_((torch.arange(length) + 100 * torch.arange(slots)[:, None]).float()[:, None, :, None])
    return cache


def cache_rows(cache: engine.SlotCache) -> list[list[int]]:
    return cache.layers[0].keys[:, 0, :, 0].long().tolist()


# ------------------------------------------------------------------------------------ job queue


def test_job_queue_takes_jobs_in_order_and_yields_prompts_in_order():
    queue = JobQueue(num_prompts=3, num_samples=2)
    assert queue.take(5) == [0, 1, 2, 3, 4]
    assert queue.take(5) == [5] and queue.jobs_left == 0 and queue.take(1) == []
    queue.finish(3, [7])  # prompt 1 before prompt 0: held back
    queue.finish(2, [6])
    assert list(queue.pop_ready()) == []
    queue.finish(1, [5, 2])
    queue.finish(0, [4])
    assert list(queue.pop_ready()) == [[[4], [5, 2]], [[6], [7]]]
    assert not queue.all_yielded
    queue.finish(5, [9])
    queue.finish(4, [8])
    assert list(queue.pop_ready()) == [[[8], [9]]]
    assert queue.all_yielded and queue.results == {} and queue.remaining == {}


@pytest.mark.parametrize(
    "free,busy,left,continuous,min_free,expected",
    [
        (4, 0, 10, False, 2, True),  # all free: refill even when static
        (2, 2, 10, False, 1, False),  # static batching waits for all slots
        (2, 2, 10, True, 2, True),
        (1, 3, 10, True, 2, False),  # not enough free yet
        (1, 3, 1, True, 2, True),  # ... unless that is all the jobs left
        (4, 0, 0, True, 1, False),  # no jobs left
        (0, 4, 10, True, 1, False),  # no free slot
    ],
)
def test_should_refill(free, busy, left, continuous, min_free, expected):
    assert engine.should_refill(free, busy, left, continuous, min_free) is expected


# -------------------------------------------------------------------------------------- refill


def test_prefill_chunks_bound_the_padded_tokens():
    prompts = [[1] * n for n in (3, 5, 2, 4, 9, 1)]
    # widths: [3, 5] -> 10 tokens; adding 2 -> 15 > 12; [2, 4] -> 8, + 9 -> 27; [9] alone may exceed
    assert engine.prefill_chunks(prompts, 0, 5, 12) == [[0, 1], [2, 3], [4], [5]]
    assert engine.prefill_chunks(prompts, 1, 3, 1000) == [[1, 2, 3]]
    assert engine.prefill_chunks(prompts, 4, 4, 1) == [[4]]


def test_place_chunk_maps_assigned_jobs_to_prefill_rows():
    # 3 samples per prompt; the chunk holds prompts 2 and 3; jobs 7, 8 (prompt 2) and 9 (prompt 3)
    rows, slots, jobs = engine.place_chunk([2, 3], {7: 5, 8: 0, 9: 2}, num_samples=3)
    assert (rows, slots, jobs) == ([0, 0, 1], [5, 0, 2], [7, 8, 9])


def test_assign_jobs_and_start_slots():
    state = slot_state(slots=4, max_new=5, cursor=10)
    engine.assign_jobs(state, [3, 1], [6, 7], [4, 2])
    assert state.job == [-1, 7, -1, 6] and state.start_host == [0, 8, 0, 6]
    slots, lengths, first = torch.tensor([3, 1]), torch.tensor([4, 2]), torch.tensor([11, 2])
    engine.start_slots(state, slots, lengths, first, max_new=5, eos=2)
    assert state.tokens[:, 0].tolist() == [PAD, 2, PAD, 11]
    assert state.generated.tolist() == [0, 1, 0, 1]
    assert state.live.tolist() == [False, False, False, True]  # slot 1 drew EOS
    assert state.last_token.tolist() == [PAD, 2, PAD, 11]
    assert state.position.tolist() == [0, 2, 0, 4]
    assert state.start.tolist() == [0, 8, 0, 6]
    # one token to generate: the first one finishes the slot
    engine.start_slots(state, torch.tensor([0]), torch.tensor([3]), torch.tensor([11]), max_new=1, eos=None)
    assert not state.live[0]


def test_copy_prompts_into_slots_ends_at_the_cursor_and_zeroes_pads():
    cache = slot_cache(slots=3, length=8)
    # a prefill batch of two left-padded prompts (width 3): row 0 has 2 tokens, row 1 has 3
    valid = torch.tensor([[False, True, True], [True, True, True]])
    source = torch.tensor([[-1.0, 10, 20], [30, 40, 50]])[:, None, :, None]  # [rows, heads, width, dim]
    prefill = type("Prefill", (), {"layers": [type("Layer", (), {"keys": source, "values": -source})()]})()
    engine.copy_prompts_into_slots(cache, prefill, valid, torch.tensor([0, 1, 0]), torch.tensor([2, 0, 1]), cursor=7)
    keys = cache_rows(cache)
    assert keys[0] == [0, 1, 2, 3, 30, 40, 50, 7]
    assert keys[1] == [100, 101, 102, 103, 0, 10, 20, 107]
    assert keys[2] == [200, 201, 202, 203, 0, 10, 20, 207]
    assert cache.layers[0].values[2, 0, 4:7, 0].tolist() == [0, -10, -20]


# -------------------------------------------------------------------------------------- decode


def test_attention_view_len():
    assert engine.attention_view_len(cursor=0, capacity=100, bucket=8) == 8
    assert engine.attention_view_len(cursor=7, capacity=100, bucket=8) == 8
    assert engine.attention_view_len(cursor=8, capacity=100, bucket=8) == 16
    assert engine.attention_view_len(cursor=97, capacity=100, bucket=8) == 100
    assert engine.attention_view_len(cursor=5, capacity=100, bucket=1) == 6
    assert engine.attention_view_len(cursor=5, capacity=100, bucket=0) == 100


def test_decode_mask_sees_each_slot_from_its_start_to_the_cursor():
    state = slot_state(slots=2, cursor=4)
    state.start = torch.tensor([1, 4])
    mask = engine.decode_mask(state, torch.arange(10), 6)
    assert mask.int().tolist() == [[0, 1, 1, 1, 1, 0], [0, 0, 0, 0, 1, 0]]


def test_append_tokens_keeps_live_slots_tokens_and_finishes_on_eos_or_length():
    state = slot_state(slots=3, max_new=3, cursor=10)
    state.tokens = torch.tensor([[5, PAD, PAD], [6, 7, PAD], [8, 9, PAD]])
    state.generated = torch.tensor([1, 2, 2])
    state.live = torch.tensor([True, True, False])  # slot 2 finished: its tokens must stay
    state.position = torch.tensor([4, 5, 6])
    engine.append_tokens(state, torch.tensor([2, 11, 12]), max_new=3, eos=2)
    assert state.tokens.tolist() == [[5, 2, PAD], [6, 7, 11], [8, 9, PAD]]
    assert state.generated.tolist() == [2, 3, 2]
    assert state.position.tolist() == [5, 6, 6]
    assert state.live.tolist() == [False, False, False]  # EOS, max_new, already finished
    assert state.last_token.tolist() == [2, 11, 12]
    assert state.cursor == 11
    state.live = torch.tensor([False, False, True])  # a finished slot at the end of its row
    state.generated = torch.tensor([2, 3, 3])
    engine.append_tokens(state, torch.tensor([3, 3, 3]), max_new=3, eos=None)
    assert state.tokens.tolist() == [[5, 2, PAD], [6, 7, 11], [8, 9, 3]]


# ------------------------------------------------------------------------------- sync: harvest etc.


def test_harvest_finished_hands_out_tokens_and_frees_slots():
    state = slot_state(slots=3, max_new=4, cursor=9)
    state.tokens = torch.tensor([[5, 6, 2, PAD], [7, PAD, PAD, PAD], [8, 8, 8, 8]])
    state.generated = torch.tensor([3, 1, 4])
    state.live = torch.tensor([False, True, False])
    state.job, state.start_host = [1, 2, 0], [3, 4, 5]
    state.start = torch.tensor([3, 4, 5])
    queue, stats, reported = JobQueue(num_prompts=2, num_samples=2), EngineStats(), []
    assert engine.harvest_finished(state, queue, stats, reported.append) == 2
    assert queue.results == {0: [[8, 8, 8, 8], [5, 6, 2]]} and queue.remaining == {0: 0}
    assert stats.generated_tokens == 7 and reported == [2]
    assert state.job == [-1, 2, -1]
    assert state.start_host == [9, 4, 9] and state.start.tolist() == [9, 4, 9]
    assert engine.harvest_finished(state, queue, stats, reported.append) == 0 and reported == [2]


def test_compact_slots_keeps_busy_rows_then_idle_ones():
    state = slot_state(slots=8, max_new=2, cursor=10)
    state.job = [-1, 4, -1, 5, -1, 6, -1, -1]
    state.start_host = list(range(8))
    state.position = torch.arange(8)
    cache, stats = slot_cache(slots=8), EngineStats()
    assert engine.compact_slots(state, cache, stats)
    # 3 busy -> 4 rows: the busy ones, then the first idle one
    assert state.slots == 4 and state.job == [4, 5, 6, -1]
    assert state.start_host == [1, 3, 5, 0] and state.position.tolist() == [1, 3, 5, 0]
    assert state.tokens.shape == (4, 2) and state.live.shape == (4,)
    assert [row[0] for row in cache_rows(cache)] == [100, 300, 500, 0]
    assert stats.compactions == 1
    # 3 busy of 4: a power of two >= 3 does not halve the batch
    assert not engine.compact_slots(state, cache, stats) and state.slots == 4
    assert not engine.compact_slots(slot_state(slots=4), slot_cache(slots=4), stats)  # nothing busy
    assert stats.compactions == 1


def test_shift_cache_moves_the_live_region_to_the_front():
    state = slot_state(slots=3, cursor=10)
    state.job, state.start_host = [0, -1, 1], [6, 2, 7]
    state.start = torch.tensor([6, 2, 7])
    cache, stats = slot_cache(slots=3, length=12), EngineStats()
    # shift = min(earliest busy start 6, cursor 10 - max_prompt 5) = 5 < slack 8: not yet
    assert not engine.shift_cache(state, cache, max_prompt=5, slack=8, force=False, stats=stats)
    assert engine.shift_cache(state, cache, max_prompt=5, slack=8, force=True, stats=stats)
    assert state.cursor == 5 and stats.defrags == 1
    assert state.start_host == [1, 0, 2] and state.start.tolist() == [1, 0, 2]
    assert cache_rows(cache)[0][:5] == [5, 6, 7, 8, 9]
    assert cache_rows(cache)[2][:5] == [205, 206, 207, 208, 209]
    # the cursor never moves below max_prompt
    assert not engine.shift_cache(state, cache, max_prompt=5, slack=0, force=True, stats=stats)


# -------------------------------------------------------------------------- model steps, tiny model


PROMPTS = [[1, 5, 9], [1, 7], [1, 3, 4, 6]]


def greedy_plan(num_samples: int) -> RunPlan:
    """Four slots, greedy, 4 new tokens: PROMPTS fit with room to decode (cache length 10)."""
    params = SamplingParams(max_new_tokens=4, eos_token_id=None, greedy=True)
    return RunPlan(
        prompts=PROMPTS,
        num_samples=num_samples,
        params=params,
        pad_id=PAD,
        slots=4,
        refill_min=1,
        max_prompt=4,
        slack=2,
        length=10,
        capacity=10,
    )


@pytest.fixture(scope="module")
def tiny_engine():
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    return SamplingEngine(model, EngineOptions(num_slots=4, attend_bucket=4, prefill_tokens=8))


def test_refill_and_decode_one_token_match_a_full_forward(tiny_engine):
    """Greedy: a refill's first tokens and a decode step's next tokens are the argmax of the
    model's logits over the prompt (and its first token)."""
    prompts = PROMPTS
    plan = greedy_plan(num_samples=2)
    state = SlotState.empty(4, 4, PAD, plan.max_prompt, "cpu")
    queue, generator = JobQueue(len(prompts), 2), torch.Generator().manual_seed(0)
    tiny_engine.stats = EngineStats(slots=4)
    tiny_engine.cache = None
    with torch.inference_mode():
        tiny_engine._refill(state, queue, [3, 2, 1, 0], plan, generator)
        # jobs 0..3 (prompts 0 and 1) in slots 3, 2, 1, 0: prompts 0 and 1 fit in one prefill chunk
        assert state.job == [3, 2, 1, 0] and queue.next_job == 4
        assert tiny_engine.stats.refills == 1 and tiny_engine.stats.prefill_calls == 1
        assert tiny_engine.stats.first_tokens == 4
        assert state.start.tolist() == [2, 2, 1, 1] and state.position.tolist() == [2, 2, 3, 3]

        def argmax_next(ids):
            return tiny_engine.model(input_ids=torch.tensor([ids])).logits[0, -1].argmax().item()

        slot_prompt = [prompts[1], prompts[1], prompts[0], prompts[0]]
        first = [argmax_next(p) for p in slot_prompt]
        assert state.tokens[:, 0].tolist() == first
        tiny_engine._decode_one_token(state, plan, generator, torch.arange(plan.capacity))
        assert state.cursor == 5 and state.generated.tolist() == [2] * 4
        assert state.tokens[:, 1].tolist() == [argmax_next(p + [t]) for p, t in zip(slot_prompt, first)]


def test_refill_splits_prompts_into_prefill_chunks(tiny_engine):
    plan = greedy_plan(num_samples=1)
    state = SlotState.empty(4, 4, PAD, plan.max_prompt, "cpu")
    tiny_engine.stats = EngineStats(slots=4)
    with torch.inference_mode():
        tiny_engine._refill(state, JobQueue(3, 1), [0, 1, 2, 3], plan, torch.Generator().manual_seed(0))
    # prefill_tokens=8: [3, 2] pads to 6 tokens, with the third prompt 3 x 4 = 12
    assert tiny_engine.stats.prefill_calls == 2 and tiny_engine.stats.prefilled_prompts == 3
    assert state.job == [0, 1, 2, -1] and state.live.tolist() == [True, True, True, False]
    assert tiny_engine.cache.layers[0].keys.shape[:3] == (4, 2, 10)
