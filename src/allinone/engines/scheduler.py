"""Continuous batching over one llama.cpp context: many sequences, one decode per step for all of them.

Each step builds one batch from
  1. one token for every reply being generated;
  2. the prompts of classifications: a classification is one forward pass and never waits for other users'
     replies (it goes into the next step); while replies stream, up to `score_chunk` of its tokens per step (512
     by default, the texts of a few requests together), so that only a very long text is spread over steps;
  3. chunks of the prompts of newly arrived replies, small enough that running streams keep flowing;
and decodes it with one `llama_decode` call, or two when prompt tokens make it large: the prompts, whose answers
go out at once, then the reply tokens (Scheduler._batches).

Caching: a task's fixed prefix (system prompt, examples) is computed once and its KV state kept in host memory;
a request restores it into its sequence (a copy of a few MB) and computes only its own tokens. After a reply the
conversation's KV state is saved the same way, without its task prefix's cells (kvstate.py; the prefix is kept
once), so the next chat turn is restored into a free sequence, joined to its prefix, and computes only the new
message. A request whose prompt starts with what a running request holds shares those cells instead
(`llama_memory_seq_cp` in the unified cache): concurrent requests of a task hold its prefix once. A saved
conversation is used up to where it and the new prompt part, as llama-server reuses a slot's cache: a regenerated
reply, or another conversation with the same system prompt, computes only what differs.

Cached prefixes are not kept in the KV cache itself: every decode step attends over the cache up to its
highest used cell, so prefixes parked there (the built-in tasks' come to ~3,000 cells) slowed every reply's
decode by 18% on the default model (20.9 -> 17.1 tokens/s, one stream, 2 threads).
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import ContextOverflow, EngineError
from .base import Chunk, GenParams, Scores, TokenLogprob, Usage
from .stops import StopBuffer

Item = tuple[int, int, int, bool]  # token, position, sequence, wants logits
MAX_PREFIXES = 16  # task prefixes kept in host memory (least recently used are dropped; ~8 MB each on the default)
MIN_REUSE = 16  # shared tokens worth restoring a saved conversation for (fewer are as quick to compute)
ECHO_CHUNK = 64  # prompt tokens per step when every one needs its logits (echo): 64 x vocab floats of output
SPLIT_TOKENS = 64  # a step of this many tokens decodes its reply tokens apart (Scheduler._batches)
SCORE_CHUNK = 512  # classification tokens a step takes while replies stream: ~2 s on the default model, 2 threads


class Context(Protocol):
    """What the scheduler needs from a llama.cpp context whose KV cache is shared by several sequences."""

    n_batch: int  # most tokens one decode takes
    n_cells: int  # KV cells shared by every sequence
    probe: Any  # a Probe reading hidden states during decodes, or None

    def decode(self, items: Sequence[Item]) -> None: ...
    def logprobs(self, index: int) -> np.ndarray[Any, np.dtype[np.float64]]: ...
    def sampler(self, params: GenParams, seen: Sequence[int] = ()) -> Any: ...
    def sample(self, sampler: Any, index: int) -> int: ...
    def free_sampler(self, sampler: Any) -> None: ...
    def is_eog(self, token: int) -> bool: ...
    def piece(self, token: int) -> bytes: ...
    def tokenize(self, text: str) -> list[int]: ...
    def seq_rm(self, seq: int, start: int) -> None: ...
    def seq_cp(self, src: int, dst: int, end: int) -> None: ...  # dst also holds src's cells before `end`
    def save(self, seq: int, start: int = 0) -> Any: ...  # cells at positions >= start; None: cannot cut
    def restore(self, seq: int, *states: Any) -> bool: ...  # one block of their cells, in order


@dataclass(eq=False)
class Saved:
    """A sequence's KV state in host memory and the tokens it holds: a task's fixed prefix, or a chat after a
    reply. A request whose prompt starts with those tokens restores it into its own sequence. A chat's state
    leaves out the cells of its task prefix (`base`), which is kept once for every conversation of the task."""

    tokens: list[int]
    state: Any
    used: int = 0  # LRU clock
    base: Saved | None = None  # the task prefix the state continues
    array: np.ndarray[Any, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.array = np.asarray(self.tokens, dtype=np.int64)

    def states(self) -> tuple[Any, ...]:
        return (self.state,) if self.base is None else (self.base.state, self.state)


def _common_start(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> int:
    """How many tokens two sequences share from the start."""
    m = min(len(a), len(b))
    differ = np.flatnonzero(a[:m] != b[:m])
    return int(differ[0]) if len(differ) else m


@dataclass(eq=False)
class Job:
    tokens: list[int]  # the whole prompt
    n_prefix: int  # of which the task's fixed prefix
    usage: Usage = field(default_factory=Usage)
    seq: int = -1
    n_past: int = 0  # prompt (and reply) tokens the sequence holds
    keep_prefix: bool = False  # compute the task prefix as a chunk of its own, then keep its state
    reserve: int = 0  # KV cells set aside for it
    cancelled: bool = False

    def extra(self) -> int:
        """Cells needed beyond the prompt."""
        return 0

    def fail(self, error: BaseException) -> None:
        """Hand the error to the caller waiting for the job."""
        raise NotImplementedError


@dataclass(eq=False)
class ScoreJob(Job):
    conts: list[list[int]] = field(default_factory=list)
    hidden: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    result: Scores | None = None
    error: BaseException | None = None
    totals: list[float] | None = None  # once the prompt is computed: each continuation's first-token logprob
    pending: list[int] = field(default_factory=list)  # multi-token continuations still to decode
    layer_sum: np.ndarray[Any, np.dtype[np.float64]] | None = None
    layer_rows: int = 0
    final: list[float] | None = None

    def extra(self) -> int:
        return max((len(c) for c in self.conts), default=1)

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


@dataclass(eq=False)
class GenJob(Job):
    params: GenParams = field(default_factory=GenParams)
    n_ctx: int = 0  # the sequence may not grow past this
    keep: bool = False  # save the conversation's state after the reply (chat history reuse)
    out: queue.SimpleQueue[Chunk | BaseException] = field(default_factory=queue.SimpleQueue)
    sampler: Any = None
    token: int | None = None  # sampled, to be decoded in the next step
    reply: list[int] = field(default_factory=list)  # reply tokens decoded into the sequence
    texts: list[str] = field(default_factory=list)
    echo: bool = False  # the prompt's tokens (and their logprobs) come back in the first chunk
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)
    pending: list[TokenLogprob] = field(default_factory=list)  # generated tokens' logprobs not yet sent
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))
    stops: StopBuffer = field(init=False)

    def __post_init__(self) -> None:
        self.stops = StopBuffer(self.params.stop)

    def extra(self) -> int:
        return max(1, min(self.params.max_tokens, self.n_ctx - len(self.tokens)))  # a reply stops at n_ctx

    def fail(self, error: BaseException) -> None:
        self.out.put(error)


@dataclass
class Part:
    """What one job put in a batch: `n` items from `start`."""

    job: Job
    start: int
    n: int
    kind: str  # "prompt", "cont" (a multi-token continuation) or "token" (a reply token)


class Scheduler:
    """Owns the context: a thread runs steps while there is work; callers submit jobs and wait on them.

    `parallel` replies and `parallel` classifications run at once; more wait in arrival order, classifications
    first. While replies are streaming, `score_chunk` bounds the prompt tokens of classifications per step and
    `prefill_chunk` those of new replies.
    """

    def __init__(
        self,
        ctx: Context,
        *,
        parallel: int,
        cache_bytes: int,
        prefill_chunk: int = 128,
        score_chunk: int = SCORE_CHUNK,
    ) -> None:
        self.ctx, self.parallel, self.cache_bytes, self.prefill_chunk = ctx, parallel, cache_bytes, prefill_chunk
        self.score_chunk = score_chunk
        self._cv = threading.Condition()
        self._incoming: list[Job] = []
        self._calls: list[tuple[Callable[[], Any], queue.SimpleQueue[Any]]] = []
        self._closing = False
        self._scores: deque[ScoreJob] = deque()  # waiting, in arrival order
        self._gens: deque[GenJob] = deque()
        self._active: list[Job] = []
        self._free = list(range(2 * parallel))  # work sequences
        self._prefixes: dict[tuple[int, ...], Saved] = {}  # task prefixes by their tokens
        self._saved: list[Saved] = []
        # what a step hands to waiting callers (chunks, results, errors), passed on just before the next decode: a
        # caller woken mid-step would take the GIL from the rest of the step, while the model's threads wait
        self._outbox: list[Callable[[], None]] = []
        self._clock = 0
        self.steps = 0  # decodes run, for tests and metrics
        self.busy_s = 0.0  # seconds spent in those decodes: the model's own work, for utilisation
        self._thread = threading.Thread(target=self._run, name="allinone-scheduler", daemon=True)
        self._thread.start()

    @property
    def running(self) -> int:
        """Requests holding a sequence now."""
        return len(self._active)

    @staticmethod
    def n_seq(parallel: int) -> int:
        """Sequences the context needs: one for each reply and each classification running at once."""
        return 2 * parallel

    # --- from other threads -----------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._closing:
                raise EngineError("the engine is closed")
            self._incoming.append(job)
            self._cv.notify()

    def cancel(self, job: Job) -> None:
        """Stop a job; its sequence is freed at the next step."""
        with self._cv:
            job.cancelled = True
            self._cv.notify()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the scheduler thread between steps and return its result."""
        box: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._cv:
            if self._closing:
                raise EngineError("the engine is closed")
            self._calls.append((fn, box))
            self._cv.notify()
        kind, value = box.get()
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join()

    # --- the scheduler thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                while not (self._incoming or self._calls or self._closing or self._active or self._waiting()):
                    self._cv.wait()
                incoming, self._incoming = self._incoming, []
                calls, self._calls = self._calls, []
                closing = self._closing
            for job in incoming:
                (self._scores if isinstance(job, ScoreJob) else self._gens).append(job)  # type: ignore[arg-type]
            for fn, box in calls:
                try:
                    box.put(("ok", fn()))
                except BaseException as e:
                    box.put(("error", e))
            if closing:
                self._fail_all(EngineError("the engine was closed"))
                self._flush()
                return
            try:
                self._step()
            except Exception as e:  # the context is in an unknown state: end every request, keep serving
                self._fail_all(e if isinstance(e, EngineError) else EngineError(f"inference failed: {e}"))
            if not self._active:  # no decode comes next to pass them on
                self._flush()

    def _waiting(self) -> bool:
        return bool(self._scores or self._gens)

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _step(self) -> None:
        self._reap()
        self._admit()
        if not self._active:
            return
        items: list[Item] = []
        parts = self._build(items)
        if not items:
            self._flush()
            return
        for batch_parts, batch_items in self._batches(parts, items):
            self._decode(batch_parts, batch_items)

    @staticmethod
    def _batches(parts: list[Part], items: list[Item]) -> list[tuple[list[Part], list[Item]]]:
        """The step's decodes: its reply tokens on their own when prompt tokens would bring the batch to
        SPLIT_TOKENS or more, else one. With that many tokens llama.cpp's CPU flash attention computes in tiles of
        64 query rows, and a tile holding a reply's token computes over every cell of the replies' interleaved
        tokens for all its rows, a cost that grows with the replies' length (benchmarks/mixed_step.py).
        Split, the prompts go first: a classification's answer (and a new reply's first token) is handed over
        while the reply tokens decode, not a decode later; the streams' tokens of the step come out at its end
        either way."""
        n_tokens = sum(p.n for p in parts if p.kind == "token")  # _build puts them first
        if n_tokens == 0 or n_tokens == len(items) or len(items) < SPLIT_TOKENS:
            return [(parts, items)]
        rest = [dataclasses.replace(p, start=p.start - n_tokens) for p in parts if p.kind != "token"]
        return [(rest, items[n_tokens:]), ([p for p in parts if p.kind == "token"], items[:n_tokens])]

    def _decode(self, parts: list[Part], items: list[Item]) -> None:
        probe = self.ctx.probe if any(p.kind == "prompt" and getattr(p.job, "hidden", False) for p in parts) else None
        if probe is not None:
            probe.start()
        self._flush()  # callers take their chunks while the model decodes, with the GIL free
        start = time.perf_counter()
        try:
            self.ctx.decode(items)
        finally:
            self.busy_s += time.perf_counter() - start
            if probe is not None:
                probe.stop()
        self.steps += 1
        outputs = np.cumsum([want for *_, want in items]) - 1  # batch index -> output row
        for part in parts:
            try:
                self._after(part, items, outputs)
            except Exception as e:
                self._finish(part.job, e if isinstance(e, EngineError) else EngineError(str(e)))

    # --- admission: a sequence and KV cells for each waiting job ------------------------------------

    def _cells_used(self) -> int:
        return sum(j.reserve for j in self._active)

    def _reap(self) -> None:
        for job in [j for j in self._active if j.cancelled]:
            self._release(job)
        for waiting in (self._scores, self._gens):
            for job in [j for j in waiting if j.cancelled]:
                waiting.remove(job)  # type: ignore[arg-type]

    def _admit(self) -> None:
        for waiting in (self._scores, self._gens):
            running = sum(isinstance(j, ScoreJob) == (waiting is self._scores) for j in self._active)
            while waiting and self._free and running < self.parallel:
                placed = self._place(waiting[0])
                if placed is None:
                    break  # the oldest waits for room in the KV cache; later ones wait behind it
                job = waiting.popleft()
                if placed:
                    self._active.append(job)
                    running += 1

    def _base(self, job: Job) -> tuple[Saved | None, int]:
        """The saved state sharing the longest start with the prompt, and how many tokens of it to use: a task
        prefix or an earlier turn of the conversation whole, or another saved conversation up to where it and the
        prompt part (as llama-server reuses a slot's cache), leaving at least the prompt's last token to compute."""
        tokens = job.tokens
        best: Saved | None = None
        n = 0
        if 0 < job.n_prefix < len(tokens):
            best = self._prefixes.get(tuple(tokens[: job.n_prefix]))
            n = job.n_prefix if best is not None else 0
        if isinstance(job, GenJob) and not job.echo and self._saved:  # echo needs the logits of every prompt token
            prompt = np.asarray(tokens[:-1], dtype=np.int64)
            for s in self._saved:
                shared = _common_start(s.array, prompt)
                if shared > n and (shared == len(s.tokens) or shared >= MIN_REUSE):
                    best, n = s, shared
        return best, n

    def _sharer(self, job: Job) -> tuple[Job | None, int]:
        """The running request whose KV cells hold the longest start of the prompt, and how many of them: the
        sequences of a unified KV cache can share cells, so those need neither a restore nor more cells (and
        every decode attends over fewer). A classification shares only its task prefix (its own tokens' hidden
        states are read as they are computed); an echo, nothing (it needs the logits of every prompt token)."""
        if isinstance(job, GenJob) and job.echo:
            return None, 0
        limit = job.n_prefix if isinstance(job, ScoreJob) else len(job.tokens) - 1
        if limit <= 0:
            return None, 0
        prompt = np.asarray(job.tokens[:limit], dtype=np.int64)
        best: Job | None = None
        n = 0
        for other in self._active:
            held = min(other.n_past, len(other.tokens))
            if (isinstance(other, GenJob) and other.echo) or held <= n:
                continue
            shared = _common_start(np.asarray(other.tokens[:held], dtype=np.int64), prompt)
            if shared > n:
                best, n = other, shared
        return best, n

    def _place(self, job: Job) -> bool | None:
        """Give the job a sequence holding its longest cached start: True; None when the KV cache has no room
        for it yet; False when it failed (it can never fit, or its sampler could not be made)."""
        need = len(job.tokens) + job.extra()
        if self._cells_used() + need > self.ctx.n_cells:
            if self._active:
                return None
            room = self.ctx.n_cells - self._cells_used()
            job.fail(ContextOverflow(f"the prompt and reply need {need} tokens of context; {room} are free"))
            return False
        if isinstance(job, GenJob):
            try:
                job.sampler = self.ctx.sampler(job.params, job.tokens[job.n_prefix :])
            except EngineError as e:
                job.fail(e)
                return False
        job.seq, job.reserve = self._free.pop(), need
        job.usage.prompt_tokens = len(job.tokens)
        base, n_base = self._base(job)  # only once it has room: a job waiting for cells is placed again each step
        src, n_src = self._sharer(job)
        if src is not None and n_src >= n_base and (n_src >= job.n_prefix or n_base >= job.n_prefix):
            # a running request holds at least as much (and the whole task prefix, so that one is kept): share it
            self.ctx.seq_cp(src.seq, job.seq, n_src)
            job.n_past = n_src
        elif base is not None and src is not None and base.base is not None and len(base.base.tokens) <= n_src:
            # a conversation's own cells from host memory, its task prefix from the running request holding it
            if self.ctx.restore(job.seq, base.state):
                self.ctx.seq_cp(src.seq, job.seq, len(base.base.tokens))
                base.used = base.base.used = self._tick()
                if n_base < len(base.tokens):
                    self.ctx.seq_rm(job.seq, n_base)
                job.n_past = n_base
            else:  # no room for it as one block of cells: share what the running request holds, compute the rest
                self.ctx.seq_rm(job.seq, 0)
                self.ctx.seq_cp(src.seq, job.seq, n_src)
                job.n_past = n_src
        elif base is not None:
            if self.ctx.restore(job.seq, *base.states()):
                base.used = self._tick()
                if n_base < len(base.tokens):  # the conversation went another way from here: drop the rest
                    self.ctx.seq_rm(job.seq, n_base)
                job.n_past = n_base
            else:  # no room for it as one block of cells: compute the prompt instead
                if self._prefixes.get(tuple(base.tokens)) is base:
                    del self._prefixes[tuple(base.tokens)]
                elif n_base == len(base.tokens):  # this conversation's earlier turn; another's stays for its own
                    self._saved.remove(base)
                self.ctx.seq_rm(job.seq, 0)
        job.usage.cached_tokens = job.n_past
        job.keep_prefix = job.n_past == 0 and 0 < job.n_prefix < len(job.tokens)
        return True

    def _keep_prefix(self, job: Job) -> None:
        """The job has just computed its task prefix (its sequence holds exactly that): keep its KV state."""
        job.keep_prefix = False
        key = tuple(job.tokens[: job.n_prefix])
        if key in self._prefixes:
            return
        if len(self._prefixes) >= MAX_PREFIXES:
            del self._prefixes[min(self._prefixes, key=lambda k: self._prefixes[k].used)]
        self._prefixes[key] = Saved(list(key), self.ctx.save(job.seq), used=self._tick())

    # --- building a batch ---------------------------------------------------------------------------

    def _build(self, items: list[Item]) -> list[Part]:
        parts: list[Part] = []
        budget = self.ctx.n_batch

        def add(job: Job, tokens: Sequence[int], pos: int, kind: str, logits: Callable[[int], bool]) -> None:
            nonlocal budget
            parts.append(Part(job, len(items), len(tokens), kind))
            items.extend((t, pos + i, job.seq, logits(i)) for i, t in enumerate(tokens))
            budget -= len(tokens)

        gens = [j for j in self._active if isinstance(j, GenJob)]
        for job in gens:
            if job.token is not None:
                add(job, [job.token], job.n_past, "token", lambda i: True)
        streaming = bool(parts)
        scoring = min(budget, self.score_chunk) if streaming else budget
        for sjob in (j for j in self._active if isinstance(j, ScoreJob)):
            if budget <= 0 or scoring <= 0:
                break
            if sjob.totals is None:  # a continuation may have taken some of the budget
                scoring -= self._add_prompt(sjob, min(budget, scoring), add)
            else:
                cont = sjob.conts[sjob.pending[0]][:-1]
                if len(cont) <= budget:
                    add(sjob, cont, len(sjob.tokens), "cont", lambda i: True)
        prefill = min(budget, self.prefill_chunk) if streaming else budget
        for job in gens:
            if job.token is None and prefill > 0:
                prefill -= self._add_prompt(job, prefill, add)
        return parts

    def _add_prompt(self, job: Job, budget: int, add: Callable[..., None]) -> int:
        """Add the next chunk of the job's prompt, at most `budget` tokens; how many were added."""
        end = job.n_prefix if job.keep_prefix else len(job.tokens)  # a prefix to keep is computed on its own
        echo = isinstance(job, GenJob) and job.echo
        chunk = job.tokens[job.n_past : min(end, job.n_past + (min(budget, ECHO_CHUNK) if echo else budget))]
        last = job.n_past + len(chunk) == len(job.tokens)
        add(job, chunk, job.n_past, "prompt", lambda i: echo or (last and i == len(chunk) - 1))
        return len(chunk)

    # --- after a decode -----------------------------------------------------------------------------

    def _after(self, part: Part, items: list[Item], outputs: np.ndarray[Any, Any]) -> None:
        job, last = part.job, part.start + part.n - 1
        if isinstance(job, ScoreJob):
            self._after_score(job, part, outputs)
            return
        assert isinstance(job, GenJob)
        job.n_past += part.n
        if part.kind == "token":
            assert job.token is not None
            job.reply.append(job.token)
            job.token = None
        else:
            if job.echo:
                self._echo(job, part)
            if job.keep_prefix and job.n_past == job.n_prefix:
                self._keep_prefix(job)
        if job.n_past < len(job.tokens):
            return
        if part.kind == "prompt" and job.echo:
            self._send(job, Chunk("", prompt_logprobs=job.prompt_logprobs))
        if job.params.max_tokens == 0:  # only the prompt's logprobs were asked for
            self._end_reply(job, "length")
        else:
            self._next_token(job, self.ctx.sample(job.sampler, last), last)

    def _echo(self, job: GenJob, part: Part) -> None:
        """The logprobs of the prompt tokens this part's logits predict (the next token of each)."""
        start = job.n_past - part.n  # the position of the part's first token
        if start == 0:
            first = job.tokens[0]
            job.prompt_logprobs.append(TokenLogprob(self._text(first), None, (), self.ctx.piece(first)))
        for i in range(part.n):
            pos = start + i + 1
            if pos < len(job.tokens):
                job.prompt_logprobs.append(self._logprob(job.tokens[pos], part.start + i, job.params.logprobs or 0))

    def _text(self, token: int) -> str:
        return self.ctx.piece(token).decode("utf-8", errors="replace")

    def _logprob(self, token: int, index: int, top: int) -> TokenLogprob:
        lp = self.ctx.logprobs(index)
        best = np.argpartition(lp, -top)[-top:] if top else np.array([], dtype=int)
        best = best[np.argsort(-lp[best])]
        return TokenLogprob(
            self._text(token), float(lp[token]), tuple((self._text(int(t)), float(lp[t])) for t in best)
        )

    def _after_score(self, job: ScoreJob, part: Part, outputs: np.ndarray[Any, Any]) -> None:
        last = part.start + part.n - 1
        if part.kind == "cont":
            k = job.pending.pop(0)
            cont = job.conts[k]
            assert job.totals is not None
            job.totals[k] += sum(float(self.ctx.logprobs(part.start + i)[t]) for i, t in enumerate(cont[1:]))
            self.ctx.seq_rm(job.seq, len(job.tokens))
        else:
            if job.hidden:
                self._probe_rows(job, part)
            job.n_past += part.n
            if job.keep_prefix and job.n_past == job.n_prefix:
                self._keep_prefix(job)
            if job.n_past < len(job.tokens):
                return
            first = self.ctx.logprobs(last)
            job.totals = [float(first[c[0]]) for c in job.conts]
            job.pending = [k for k, c in enumerate(job.conts) if len(c) > 1]
            if job.hidden:
                probe = self.ctx.probe
                job.final = probe.rows["final"][int(outputs[last])].astype(np.float64).tolist()
        if not job.pending:
            assert job.totals is not None
            hidden = None
            if job.hidden:
                assert job.final is not None
                mean = [] if job.layer_sum is None else (job.layer_sum / max(job.layer_rows, 1)).tolist()
                hidden = mean + job.final
            job.result = Scores(job.totals, job.usage, hidden)
            self._finish(job)

    def _probe_rows(self, job: ScoreJob, part: Part) -> None:
        """Add the probed layers' rows of the job's own tokens (not the task prefix) to its running mean."""
        probe = self.ctx.probe
        layers = [probe.rows.get(f"layer{layer}") for layer in probe.layers]
        if not layers or any(rows is None for rows in layers):
            return
        skip = max(0, job.n_prefix - job.n_past)
        mine = np.hstack([rows[part.start + skip : part.start + part.n] for rows in layers]).astype(np.float64)
        if len(mine):
            total = mine.sum(axis=0)
            job.layer_sum = total if job.layer_sum is None else job.layer_sum + total
            job.layer_rows += len(mine)

    def _next_token(self, job: GenJob, token: int, index: int) -> None:
        """A sampled token: end of the reply, or text to send and a token to decode in the next step."""
        if self.ctx.is_eog(token):
            self._end_reply(job, "stop")
            return
        job.usage.completion_tokens += 1
        if job.params.logprobs is not None:
            job.pending.append(self._logprob(token, index, job.params.logprobs))
        text = job.stops.push(job.decoder.decode(self.ctx.piece(token)))
        if text:
            job.texts.append(text)
            self._send(job, Chunk(text, logprobs=self._sent(job)))
        if job.stops.stopped:
            self._end_reply(job, "stop")
        elif job.usage.completion_tokens >= job.params.max_tokens or job.n_past + 1 >= job.n_ctx:
            self._end_reply(job, "length")
        else:
            job.token = token

    def _end_reply(self, job: GenJob, finish: str) -> None:
        tail = "" if job.stops.stopped else job.stops.push(job.decoder.decode(b"", final=True)) + job.stops.flush()
        if job.keep:
            self._save_turn(job, "".join(job.texts) + tail)
        self._finish(job)
        self._send(job, Chunk(tail, finish, job.usage, logprobs=self._sent(job)))  # type: ignore[arg-type]

    @staticmethod
    def _sent(job: GenJob) -> list[TokenLogprob] | None:
        """The logprobs of the tokens generated since the last chunk (None when not asked for)."""
        if job.params.logprobs is None:
            return None
        sent, job.pending = job.pending, []
        return sent

    def _save_turn(self, job: GenJob, text: str) -> None:
        """Save where the next chat turn starts: prompt plus reply when the reply's tokens are what its text
        re-tokenizes to (the next prompt then extends them), else the prompt alone."""
        held = job.tokens + job.reply
        if job.reply != self.ctx.tokenize(text):
            self.ctx.seq_rm(job.seq, len(job.tokens))
            held = job.tokens
        self._saved = [s for s in self._saved if s.tokens != held[: len(s.tokens)]]  # superseded turns
        prefix = self._prefixes.get(tuple(job.tokens[: job.n_prefix])) if job.n_prefix else None
        own = self.ctx.save(job.seq, job.n_prefix) if prefix is not None else None
        if own is None:  # no cached prefix to continue, or a state this context cannot cut: keep it whole
            prefix, own = None, self.ctx.save(job.seq)
        saved = Saved(held, own, self._tick(), prefix)
        self._saved.append(saved)
        while self._cache_size() > self.cache_bytes and len(self._saved) > 1:
            self._saved.remove(min((s for s in self._saved if s is not saved), key=lambda s: s.used))
        if self._cache_size() > self.cache_bytes:
            self._saved.remove(saved)

    def _cache_size(self) -> int:
        """Bytes of the saved conversations, with the task prefixes they continue that are no longer cached on
        their own (dropped from the prefixes, they stay alive for the conversations that need them)."""
        cached = {id(p) for p in self._prefixes.values()}
        orphans = {id(s.base): s.base for s in self._saved if s.base is not None and id(s.base) not in cached}
        return sum(len(s.state) for s in self._saved) + sum(len(b.state) for b in orphans.values())

    def _send(self, job: GenJob, chunk: Chunk) -> None:
        self._outbox.append(functools.partial(job.out.put, chunk))

    def _flush(self) -> None:
        """Hand callers what the steps since the last decode produced, in order."""
        outbox, self._outbox = self._outbox, []
        for deliver in outbox:
            deliver()

    def _finish(self, job: Job, error: BaseException | None = None) -> None:
        """Free the job's sequence; with an error, hand it to the caller."""
        self._release(job)
        if error is not None:
            self._outbox.append(functools.partial(job.fail, error))
        elif isinstance(job, ScoreJob):
            self._outbox.append(job.done.set)

    def _release(self, job: Job) -> None:
        if job in self._active:
            self._active.remove(job)
            self.ctx.seq_rm(job.seq, 0)
            self._free.append(job.seq)
        if isinstance(job, GenJob) and job.sampler is not None:
            self.ctx.free_sampler(job.sampler)
            job.sampler = None

    def _fail_all(self, error: BaseException) -> None:
        for job in [*self._active, *self._scores, *self._gens]:
            self._finish(job, error)
        self._scores.clear()
        self._gens.clear()

    # --- cache control ------------------------------------------------------------------------------

    def clear(self) -> None:
        """Drop every cached prefix and saved state (on the scheduler thread, between steps)."""
        self._prefixes.clear()
        self._saved = []
