"""The continuous-batching scheduler on a fake llama.cpp context that checks the KV cache's invariants.

The fake context keeps every KV cell (position, token, the sequences holding it), refuses a token whose
position is not the next one of its sequence, and counts cells in use, so a scheduling bug (a gap, an
overlap, a leak, an overfull cache) fails loudly here rather than as wrong logits on the real model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from allinone.engines.base import GenParams
from allinone.engines.scheduler import GenJob, Item, Scheduler, ScoreJob
from allinone.errors import ContextOverflow

V = 32  # vocabulary: token t is the letter chr(97 + t); token 31 ends a reply
EOG = 31


class FakeContext:
    """Cells as (position, token, set of sequences); the next token after t is most likely (t + 1) % 26."""

    def __init__(self, n_cells: int = 4096, n_batch: int = 64) -> None:
        self.n_cells, self.n_batch, self.probe = n_cells, n_batch, None
        self.cells: list[list[Any]] = []  # [pos, token, seqs]
        self.batches: list[list[Item]] = []
        self.last: list[Item] = []
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()
        self.delay = 0.0  # seconds per decode, for tests that act while replies stream
        self.refuse_restore = False
        self.cuts = True  # save() can leave out a task prefix's cells (llama.cpp: a state layout kvstate parses)
        self.restored: list[tuple[Any, ...]] = []
        self.samplers: list[dict[str, Any]] = []

    def seq_tokens(self, seq: int) -> list[int]:
        held = sorted((c[0], c[1]) for c in self.cells if seq in c[2])
        assert [p for p, _ in held] == list(range(len(held))), f"sequence {seq} has gaps: {held}"
        return [t for _, t in held]

    def decode(self, items: Sequence[Item]) -> None:
        assert len(items) <= self.n_batch, f"a batch of {len(items)} tokens; llama_decode takes {self.n_batch}"
        self.gate.wait(5)
        time.sleep(self.delay)
        with self.lock:
            for tok, pos, seq, _ in items:
                assert pos == len(self.seq_tokens(seq)), f"token at {pos} for sequence {seq} is not the next one"
                self.cells.append([pos, tok, {seq}])
            assert len(self.cells) <= self.n_cells, "the KV cache overflowed"
            self.batches.append(list(items))
            self.last = list(items)

    def logprobs(self, index: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        tok = self.last[index][0]
        out = np.full(V, np.log(0.1 / (V - 1)))
        out[(tok + 1) % 26 if tok < 25 else EOG] = np.log(0.9)
        return out

    def sampler(self, params: GenParams, seen: Sequence[int] = ()) -> Any:
        self.samplers.append({"params": params, "seen": list(seen)})
        return self.samplers[-1]

    def sample(self, sampler: Any, index: int) -> int:
        return int(np.argmax(self.logprobs(index)))

    def free_sampler(self, sampler: Any) -> None:
        sampler["freed"] = True

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def piece(self, token: int) -> bytes:
        return chr(97 + token).encode()

    def tokenize(self, text: str) -> list[int]:
        return [ord(c) - 97 for c in text]

    def seq_rm(self, seq: int, start: int) -> None:
        with self.lock:
            for c in self.cells:
                if c[0] >= start:
                    c[2].discard(seq)
            self.cells = [c for c in self.cells if c[2]]

    def seq_cp(self, src: int, dst: int, end: int) -> None:
        with self.lock:
            for c in self.cells:
                if src in c[2] and c[0] < end:
                    c[2].add(dst)

    def save(self, seq: int, start: int = 0) -> Any:
        if start and not self.cuts:
            return None
        return tuple((p, t) for p, t in enumerate(self.seq_tokens(seq)) if p >= start)  # one entry per cell

    def restore(self, seq: int, *states: Any) -> bool:
        if self.refuse_restore:  # as llama.cpp when no block of free cells holds the state
            return False
        with self.lock:
            self.cells += [[p, t, {seq}] for state in states for p, t in state]
        self.restored.append(states)
        return True

    def tokens_in(self, batch: list[Item], seq: int) -> list[int]:
        return [t for t, _, s, _ in batch if s == seq]


def letters(text: str) -> list[int]:
    return [ord(c) - 97 for c in text]


@pytest.fixture
def ctx() -> FakeContext:
    return FakeContext()


@pytest.fixture
def sched(ctx: FakeContext) -> Any:
    s = Scheduler(ctx, parallel=4, cache_bytes=1 << 20, prefill_chunk=8)
    yield s
    s.close()


def score(sched: Scheduler, prompt: str, n_prefix: int, conts: list[str]) -> ScoreJob:
    job = ScoreJob(letters(prompt), n_prefix, conts=[letters(c) for c in conts])
    sched.submit(job)
    assert job.done.wait(5)
    if job.error:
        raise job.error
    return job


def generate(sched: Scheduler, prompt: str, n_prefix: int = 0, max_tokens: int = 8, keep: bool = False) -> GenJob:
    job = GenJob(letters(prompt), n_prefix, params=GenParams(max_tokens=max_tokens), n_ctx=4096, keep=keep)
    sched.submit(job)
    return job


def drain(job: GenJob) -> tuple[str, Any]:
    parts = []
    while True:
        item = job.out.get(timeout=5)
        if isinstance(item, BaseException):
            raise item
        parts.append(item.text)
        if item.finish_reason is not None:
            return "".join(parts), item


def test_scores_are_the_logprobs_of_each_continuation_multi_token_ones_summed(sched: Scheduler) -> None:
    job = score(sched, "sysxyuser", 3, ["a", "abc", "z"])
    assert job.result is not None
    high, low = np.log(0.9), np.log(0.1 / (V - 1))
    # after "r" the likely token is "s"; "abc" is a, then b after a (likely), then c after b (likely)
    assert job.result.logprobs == pytest.approx([low, low + 2 * high, low])


def test_a_task_prefix_is_computed_once_and_shared(sched: Scheduler, ctx: FakeContext) -> None:
    first = score(sched, "prefixone", 6, ["a"])
    second = score(sched, "prefixtwo", 6, ["a"])
    assert first.usage.cached_tokens == 0 and second.usage.cached_tokens == 6
    decoded = [t for b in ctx.batches for t, *_ in b]
    assert decoded.count(letters("p")[0]) == 1  # the prefix was decoded once
    assert first.result and second.result


def test_a_reply_streams_until_the_end_of_generation_token(sched: Scheduler) -> None:
    text, last = drain(generate(sched, "abc", max_tokens=50))
    assert text == "defghijklmnopqrstuvwxyz" and last.finish_reason == "stop"
    assert last.usage.completion_tokens == len(text)


def test_a_replys_sampler_sees_the_requests_own_tokens_not_the_task_prefix(sched: Scheduler, ctx: FakeContext) -> None:
    drain(generate(sched, "sysmsguser", n_prefix=6, max_tokens=3))  # DRY looks back over the request's own tokens
    assert ctx.samplers[-1]["seen"] == letters("user")


def test_max_tokens_ends_a_reply_with_length(sched: Scheduler) -> None:
    text, last = drain(generate(sched, "abc", max_tokens=4))
    assert text == "defg" and last.finish_reason == "length"


def test_streams_decode_together_one_token_each_per_step(sched: Scheduler, ctx: FakeContext) -> None:
    ctx.gate.clear()
    jobs = [generate(sched, p, max_tokens=6) for p in ["ab", "ef", "ij", "mn"]]
    ctx.gate.set()
    texts = [drain(j)[0] for j in jobs]
    assert texts == ["cdefgh", "ghijkl", "klmnop", "opqrst"]
    assert max(len({s for _, _, s, _ in b}) for b in ctx.batches) == 4  # one batch held all four sequences


def test_a_steps_chunks_reach_their_callers_just_before_the_next_decode_not_mid_step(ctx: FakeContext) -> None:
    # a caller woken mid-step takes the GIL from the rest of the step while the model's threads wait
    jobs: list[GenJob] = []
    seen: list[list[int]] = []  # at each sample: how many chunks each caller has been handed
    sample = ctx.sample

    def sample_and_look(sampler: Any, index: int) -> int:
        seen.append([j.out.qsize() for j in jobs])
        return sample(sampler, index)

    ctx.sample = sample_and_look  # type: ignore[method-assign]
    ctx.gate.clear()
    sched = Scheduler(ctx, parallel=4, cache_bytes=1 << 20, prefill_chunk=8)
    try:
        jobs += [generate(sched, p, max_tokens=4) for p in ["ab", "ef"]]
        ctx.gate.set()
        assert [drain(j)[0] for j in jobs] == ["cdef", "ghij"]
    finally:
        sched.close()
    pairs = [(seen[i], seen[i + 1]) for i in range(0, len(seen) - 1, 2)]  # the two samples of one step
    assert len(pairs) >= 3
    assert all(first == second for first, second in pairs)  # nothing handed over between them


def test_a_classification_goes_into_the_next_step_while_replies_stream(sched: Scheduler, ctx: FakeContext) -> None:
    ctx.delay = 0.03
    streams = [generate(sched, "a", max_tokens=20) for _ in range(4)]
    while len(ctx.batches) < 3:  # the replies are streaming
        time.sleep(0.001)
    ctx.gate.clear()  # hold the decode in progress; the classification arrives meanwhile
    time.sleep(0.05)
    n_before = len(ctx.batches)
    job = ScoreJob(letters("sysquestion"), 3, conts=[letters("a")])
    sched.submit(job)
    ctx.gate.set()
    assert job.done.wait(5)
    seq_batches = [i for i, b in enumerate(ctx.batches) if any(s == job.seq for *_, s, _ in b)]
    assert seq_batches and seq_batches[0] <= n_before + 1  # in the step after the one running when it came
    for s in streams:
        assert drain(s)[1].finish_reason == "length"
    assert all(j.usage.completion_tokens == 20 for j in streams)


def test_a_long_classification_is_computed_in_chunks_while_replies_stream_and_whole_when_idle(
    ctx: FakeContext,
) -> None:
    # a long text computed in one step would stall every stream for the whole of its prefill
    ctx.delay = 0.005
    sched = Scheduler(ctx, parallel=4, cache_bytes=1 << 20, prefill_chunk=8, score_chunk=6)
    try:
        stream = generate(sched, "a", max_tokens=20)
        while len(ctx.batches) < 2:
            time.sleep(0.001)
        first = len(ctx.batches)
        job = score(sched, "sys" + "q" * 30, 3, ["a"])
        assert drain(stream)[1].finish_reason == "length"
        mine = [i for i, b in enumerate(ctx.batches) if ctx.tokens_in(b, job.seq)]
        assert mine[0] <= first + 1  # still in the next step
        assert max(len(ctx.tokens_in(ctx.batches[i], job.seq)) for i in mine) <= 6
        assert all(ctx.tokens_in(ctx.batches[i], stream.seq) for i in mine)  # the stream moved in each of them
        idle = len(ctx.batches)
        alone = score(sched, "sys" + "q" * 30, 3, ["a"])  # nothing streams: the prompt in one step
        assert len([b for b in ctx.batches[idle:] if ctx.tokens_in(b, alone.seq)]) == 1
        assert alone.result is not None and job.result is not None
        assert alone.result.logprobs == job.result.logprobs
    finally:
        sched.close()


def test_reply_tokens_are_decoded_apart_after_the_prompt_when_a_prompt_makes_the_step_large() -> None:
    # llama.cpp's CPU flash attention tiles 64 query rows: a reply's token in a tile makes every row of it attend
    # over all the replies' cells, so a step of SPLIT_TOKENS or more decodes the reply tokens on their own, after
    # the prompt, so that a classification's answer goes out while they decode
    ctx = FakeContext(n_batch=128)
    ctx.delay = 0.005
    sched = Scheduler(ctx, parallel=4, cache_bytes=1 << 20, prefill_chunk=8, score_chunk=100)
    answered: list[bool] = []  # at each decode: had the classification been answered?
    job = ScoreJob(letters("sys" + "q" * 80), 0, conts=[letters("a"), letters("b")])
    decode = ctx.decode

    def decode_and_look(items: Sequence[Item]) -> None:
        answered.append(job.done.is_set())
        decode(items)

    ctx.decode = decode_and_look  # type: ignore[method-assign]
    try:
        stream = generate(sched, "a", max_tokens=20)
        while len(ctx.batches) < 2:
            time.sleep(0.001)
        ctx.gate.clear()  # hold the decode in progress (it becomes batch n); the classification arrives meanwhile
        time.sleep(0.05)
        n = len(ctx.batches)
        sched.submit(job)
        ctx.gate.set()
        assert job.done.wait(5)
        text, _ = drain(stream)
        mine = [i for i, b in enumerate(ctx.batches) if ctx.tokens_in(b, job.seq)]
        assert mine == [n + 1]  # the whole prompt, first in the next step, before its reply token
        assert not ctx.tokens_in(ctx.batches[n + 1], stream.seq)  # no reply token beside the prompt
        assert [s for *_, s, _ in ctx.batches[n + 2]] == [stream.seq]  # decoded just after, alone
        assert not answered[n + 1] and answered[n + 2]  # answered as the step's reply tokens decoded
        assert text == "bcdefghijklmnopqrstu"  # each token sampled from its own decode's logits
        alone = score(sched, "sys" + "q" * 80, 3, ["a", "b"])
        assert alone.result is not None and job.result is not None
        assert alone.result.logprobs == job.result.logprobs
    finally:
        sched.close()


def test_a_step_never_holds_more_than_n_batch_tokens_with_continuations_beside_a_long_prompt(
    ctx: FakeContext,
) -> None:
    ctx.gate.clear()  # both arrive before the first step
    sched = Scheduler(ctx, parallel=4, cache_bytes=1 << 20, prefill_chunk=8)
    try:
        short = ScoreJob(letters("sysab"), 3, conts=[letters("c"), letters("cdefgh")])  # a multi-token continuation
        long = ScoreJob(letters("sys" + "q" * 150), 3, conts=[letters("a")])
        sched.submit(short)
        sched.submit(long)
        ctx.gate.set()
        assert short.done.wait(5) and long.done.wait(5)
        assert short.error is None and long.error is None, (short.error, long.error)
    finally:
        sched.close()
    assert max(len(b) for b in ctx.batches) == ctx.n_batch  # the long prompt filled steps, never past the limit


def test_new_prompts_are_prefilled_in_chunks_while_others_stream(sched: Scheduler, ctx: FakeContext) -> None:
    ctx.delay = 0.005
    running = generate(sched, "a", max_tokens=30)
    while len(ctx.batches) < 2:
        time.sleep(0.001)
    long = generate(sched, "b" * 40, max_tokens=2)
    drain(long)
    drain(running)
    chunks = [len(ctx.tokens_in(b, long.seq)) for b in ctx.batches if ctx.tokens_in(b, long.seq)]
    assert sum(chunks[:-2]) >= 30 and max(chunks) <= 8  # prefill_chunk per step
    steps_of_prefill = [b for b in ctx.batches if len(ctx.tokens_in(b, long.seq)) > 1]
    assert all(ctx.tokens_in(b, running.seq) for b in steps_of_prefill)  # the running stream kept flowing


def test_a_cancelled_reply_frees_its_sequence_within_one_step(sched: Scheduler, ctx: FakeContext) -> None:
    ctx.delay = 0.005
    job = generate(sched, "a", max_tokens=1000)
    job.out.get(timeout=5)
    sched.cancel(job)
    n = len(ctx.batches)
    deadline = time.time() + 5
    while ctx.seq_tokens(job.seq) and time.time() < deadline:
        time.sleep(0.001)
    assert not ctx.seq_tokens(job.seq) and len(ctx.batches) <= n + 1
    assert job.sampler is None  # freed


def test_a_chat_turn_restores_the_previous_turn_and_decodes_only_the_new_tokens(
    sched: Scheduler, ctx: FakeContext
) -> None:
    text, last = drain(generate(sched, "wx", max_tokens=5, keep=True))
    assert text == "yz" and last.finish_reason == "stop"
    before = len(ctx.batches)
    second = generate(sched, "wxyzab", max_tokens=2, keep=True)  # the first turn, its reply, a new message
    drain(second)
    assert second.usage.cached_tokens == 4  # "wxyz" restored
    assert [t for b in ctx.batches[before:] for t in ctx.tokens_in(b, second.seq)][:2] == letters("ab")


def test_a_job_waits_for_room_in_the_kv_cache_and_one_that_never_fits_fails() -> None:
    ctx = FakeContext(n_cells=40)
    sched = Scheduler(ctx, parallel=4, cache_bytes=1 << 20)
    try:
        big = generate(sched, "a" * 20, max_tokens=15)  # reserves 35 cells
        waiting = generate(sched, "b" * 10, max_tokens=5)  # needs 15: waits for the first to end
        assert drain(big)[1].finish_reason == "length"
        assert drain(waiting)[0]
        with pytest.raises(ContextOverflow):
            drain(generate(sched, "c" * 30, max_tokens=20))
    finally:
        sched.close()


def test_a_cached_prefix_holds_no_kv_cells_between_requests() -> None:
    """Prefixes wait in host memory: parked in the KV cache they would slow every decode step (see the module)."""
    ctx = FakeContext(n_cells=64)
    sched = Scheduler(ctx, parallel=2, cache_bytes=1 << 20)
    try:
        score(sched, "x" * 30 + "q", 30, ["a"])
        assert ctx.cells == []  # the job is done and its prefix is cached, in host memory
        job = score(sched, "y" * 50, 0, ["a"])  # needs 51 of the 64 cells
        assert job.result is not None and len(ctx.cells) <= 64
        again = score(sched, "x" * 30 + "r", 30, ["a"])
        assert again.usage.cached_tokens == 30  # restored, not recomputed
    finally:
        sched.close()


def test_closing_fails_waiting_callers_instead_of_leaving_them_hanging(ctx: FakeContext) -> None:
    sched = Scheduler(ctx, parallel=1, cache_bytes=1 << 20)
    ctx.gate.clear()
    job = generate(sched, "a", max_tokens=100)
    time.sleep(0.05)
    closer = threading.Thread(target=sched.close)
    closer.start()
    ctx.gate.set()
    closer.join(5)
    with pytest.raises(Exception, match="closed"):
        drain(job)


def test_generated_tokens_come_with_their_logprobs_and_alternatives(sched: Scheduler) -> None:
    job = GenJob(letters("abc"), 0, params=GenParams(max_tokens=3, logprobs=2), n_ctx=4096)
    sched.submit(job)
    chunks = []
    while not chunks or chunks[-1].finish_reason is None:
        chunks.append(job.out.get(timeout=5))
    entries = [e for c in chunks for e in (c.logprobs or [])]
    assert [e.token for e in entries] == ["d", "e", "f"]
    assert all(e.logprob == pytest.approx(np.log(0.9)) and len(e.top) == 2 for e in entries)
    assert entries[0].top[0] == ("d", pytest.approx(np.log(0.9)))  # the most likely first


def test_echo_returns_the_prompts_logprobs_and_max_tokens_0_generates_nothing(sched: Scheduler) -> None:
    job = GenJob(letters("abd"), 0, params=GenParams(max_tokens=0, logprobs=1), n_ctx=4096, echo=True)
    sched.submit(job)
    first, last = job.out.get(timeout=5), job.out.get(timeout=5)
    assert [e.token for e in first.prompt_logprobs] == ["a", "b", "d"]
    high, low = np.log(0.9), np.log(0.1 / (V - 1))
    assert [e.logprob for e in first.prompt_logprobs] == [None, pytest.approx(high), pytest.approx(low)]
    assert last.finish_reason == "length" and last.usage.completion_tokens == 0 and last.text == ""


def test_a_saved_conversation_is_reused_up_to_where_a_new_prompt_parts_from_it(
    sched: Scheduler, ctx: FakeContext
) -> None:
    """The same system prompt in another conversation, or the same prompt again (a regenerated reply): only what
    differs is computed, and what the saved state holds past that point is dropped from the sequence."""
    system = "q" * 20
    drain(generate(sched, system + "ab", max_tokens=3, keep=True))
    other = generate(sched, system + "jkl", max_tokens=2, keep=True)
    drain(other)
    assert other.usage.cached_tokens == 20  # the shared start, not the first conversation's "ab" and reply
    before = len(ctx.batches)
    again = generate(sched, system + "jkl", max_tokens=2)
    text, _ = drain(again)
    assert again.usage.cached_tokens == 22  # all but the last prompt token, which gives the first logits
    assert next(t for b in ctx.batches[before:] for t in ctx.tokens_in(b, again.seq)) == letters("l")[0]
    assert text == "mn"  # computed from "l" on: the saved state's own reply was dropped from the sequence


def test_a_short_shared_start_is_computed_rather_than_restored(sched: Scheduler) -> None:
    drain(generate(sched, "abcdef" * 2, max_tokens=2, keep=True))
    job = generate(sched, "abcdef" + "zz", max_tokens=2)
    drain(job)
    assert job.usage.cached_tokens == 0  # 6 shared tokens: under MIN_REUSE


def test_a_state_that_cannot_be_restored_for_another_conversation_stays_saved_for_its_own(
    sched: Scheduler, ctx: FakeContext
) -> None:
    system = "q" * 20
    drain(generate(sched, system + "ab", max_tokens=3, keep=True))  # saved: its 22 prompt tokens
    ctx.refuse_restore = True
    other = generate(sched, system + "jkl", max_tokens=2)
    drain(other)
    assert other.usage.cached_tokens == 0  # computed instead
    ctx.refuse_restore = False
    own = generate(sched, system + "abcdexy", max_tokens=2)  # the first conversation's next turn
    drain(own)
    assert own.usage.cached_tokens == 22  # its saved state was not dropped for the other's failed restore


def test_a_saved_chat_leaves_out_its_task_prefix_which_is_kept_once_for_every_conversation(ctx: FakeContext) -> None:
    """The cache budget holds conversations, not copies of the prefix: 3 chats of 40 prefix cells and a few of
    their own fit in 40 cells of budget, and each one's next turn restores prefix and own cells together."""
    sched = Scheduler(ctx, parallel=4, cache_bytes=40)
    try:
        prefix = "p" * 40
        users = ("ux", "vwx", "wx")  # each reply is "yz", then the end of the reply
        for user in users:
            assert drain(generate(sched, prefix + user, 40, max_tokens=5, keep=True))[0] == "yz"
        assert len(sched._saved) == 3
        assert all(s.base is sched._prefixes[tuple(letters(prefix))] for s in sched._saved)
        assert [len(s.state) for s in sched._saved] == [4, 5, 4]  # the message and the reply only
        for user in users:
            turn = generate(sched, prefix + user + "yzab", 40, max_tokens=1)
            drain(turn)  # the fake context asserts the sequence holds every position from 0 without a gap
            assert turn.usage.cached_tokens == 40 + len(user) + 2
        assert all(len(states) == 2 and len(states[0]) == 40 for states in ctx.restored[-3:])
    finally:
        sched.close()


def test_a_context_that_cannot_cut_states_saves_them_whole(ctx: FakeContext) -> None:
    ctx.cuts = False
    sched = Scheduler(ctx, parallel=4, cache_bytes=100)
    try:
        drain(generate(sched, "p" * 40 + "wx", 40, max_tokens=5, keep=True))
        (saved,) = sched._saved
        assert saved.base is None and len(saved.state) == 44
        turn = generate(sched, "p" * 40 + "wxyzab", 40, max_tokens=1)
        drain(turn)
        assert turn.usage.cached_tokens == 44
    finally:
        sched.close()


def test_a_conversation_outlives_its_prefix_in_the_prefix_cache_and_its_bytes_are_counted(ctx: FakeContext) -> None:
    sched = Scheduler(ctx, parallel=4, cache_bytes=50)
    try:
        drain(generate(sched, "p" * 40 + "wx", 40, max_tokens=5, keep=True))
        assert sched._cache_size() == 4
        sched._prefixes.clear()  # as when MAX_PREFIXES other task prefixes came since
        assert sched._cache_size() == 44  # the conversation keeps its prefix alive: counted now
        turn = generate(sched, "p" * 40 + "wxyzab", 40, max_tokens=1, keep=True)
        drain(turn)
        assert turn.usage.cached_tokens == 44
    finally:
        sched.close()


def running(sched: Scheduler, prompt: str, n_prefix: int) -> GenJob:
    """A reply that keeps its sequence busy for a while: the fake's reply runs to "z" (about 24 steps) and the
    caller sets ctx.delay per step."""
    job = generate(sched, prompt, n_prefix, max_tokens=100)
    deadline = time.time() + 5
    while job.n_past <= len(job.tokens) and time.time() < deadline:
        time.sleep(0.001)
    return job


def test_a_running_requests_cells_are_shared_instead_of_restored(sched: Scheduler, ctx: FakeContext) -> None:
    prefix = "p" * 30
    ctx.delay = 0.03
    busy = running(sched, prefix + "ab", 30)
    restores = len(ctx.restored)
    job = score(sched, prefix + "xy", 30, ["a"])
    assert job.usage.cached_tokens == 30 and len(ctx.restored) == restores  # shared with `busy`, not restored
    assert [c for c in ctx.cells if c[0] == 0] == [[0, letters("p")[0], {busy.seq}]]  # one cell, busy's again
    sched.cancel(busy)


def test_a_classification_shares_only_its_task_prefix_and_an_echo_nothing(sched: Scheduler, ctx: FakeContext) -> None:
    """A classification's own tokens are computed (their hidden states are read then); an echo needs the logits
    of every prompt token."""
    ctx.delay = 0.03
    busy = running(sched, "p" * 30 + "hello", 30)
    job = score(sched, "p" * 30 + "hello", 30, ["a"])
    assert job.usage.cached_tokens == 30
    echo = GenJob(letters("p" * 30 + "he"), 0, params=GenParams(max_tokens=0, logprobs=1), n_ctx=4096, echo=True)
    sched.submit(echo)
    drain(echo)
    assert echo.usage.cached_tokens == 0 and len(echo.prompt_logprobs) == 32
    sched.cancel(busy)


def test_a_chat_turn_takes_its_own_cells_from_memory_and_its_prefix_from_a_running_request(
    sched: Scheduler, ctx: FakeContext
) -> None:
    prefix = "p" * 30
    drain(generate(sched, prefix + "wx", 30, max_tokens=5, keep=True))  # saved: "wxyz" without the prefix
    ctx.delay = 0.03
    busy = running(sched, prefix + "ab", 30)
    restores = len(ctx.restored)
    turn = generate(sched, prefix + "wxyzab", 30, max_tokens=1)
    drain(turn)  # the fake asserts the sequence holds every position from 0 without a gap
    assert turn.usage.cached_tokens == 34
    assert [len(states) for states in ctx.restored[restores:]] == [1]  # the turn's own 4 cells only
    assert len(ctx.restored[-1][0]) == 4
    sched.cancel(busy)
