"""Thin wrapper over one llama.cpp model and one context whose KV cache several sequences share
(llama-cpp-python's low-level API); `scheduler.py` batches the requests into its decodes."""

from __future__ import annotations

import ctypes
import json
import logging
import math
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ContextOverflow, EngineError, ModelError
from ..structured import schema_to_gbnf
from . import dry, kvstate
from .base import Busy, Chunk, Conversation, Engine, EngineInfo, GenParams, Prompt, PromptTokens, Scores, Segment, Slots
from .probe import Probe
from .scheduler import SCORE_CHUNK, GenJob, Item, Scheduler, ScoreJob
from .template import ChatTemplate

__all__ = ["LlamaCppEngine"]

_log_callback: Any = None  # keeps the ctypes callback alive
GGML_TYPE_F32, GGML_TYPE_F16 = 0, 1
log = logging.getLogger(__name__)


def cpu_has_amx() -> bool:
    """The CPU has AMX tiles: llama.cpp then repacks Q4_K weights for them, and llama-cpp-python 0.3.36's
    libggml-cpu crashes on the first large batch (measured on such a machine)."""
    try:
        return " amx" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def repack_weights(mode: str) -> bool:
    """Whether to repack the weights (`use_extra_bufts`) for the `repack` setting: on, off, or auto (on unless AMX)."""
    if mode == "on" and cpu_has_amx():
        log.warning("ALLINONE_REPACK=on on a CPU with AMX: llama-cpp-python 0.3.36 has crashed there; use auto or off")
    return mode == "on" or (mode == "auto" and not cpu_has_amx())


def _quiet(ll: Any) -> None:
    """Silence llama.cpp's own logging on stderr; our errors say what went wrong."""
    global _log_callback
    if _log_callback is None:
        _log_callback = ll.llama_log_callback(lambda level, text, user_data: None)
        ll.llama_log_set(_log_callback, ctypes.c_void_p(0))
        ll.llama_backend_init()


def dry_sampler(ll: Any, vocab: Any, multiplier: float, seen: Sequence[int] = ()) -> Any:
    """llama.cpp's DRY sampler with dry.py's settings, having seen the last dry.LAST_N of `seen`."""
    breakers = (ctypes.c_char_p * len(dry.BREAKERS))(*(b.encode() for b in dry.BREAKERS))
    sampler = ll.llama_sampler_init_dry(
        vocab, multiplier, dry.BASE, dry.ALLOWED_LENGTH, dry.LAST_N, breakers, len(breakers)
    )
    return _seeing(ll, sampler, seen)


def _seeing(ll: Any, sampler: Any, seen: Sequence[int]) -> Any:
    """The DRY sampler, having accepted the last dry.LAST_N of `seen`."""
    for token in seen[-dry.LAST_N :]:
        ll.llama_sampler_accept(sampler, token)
    return sampler


class DrySamplers:
    """DRY samplers cloned from one made per multiplier (the `keep` most recently used): making one scans the whole
    vocabulary for the sequence breakers, on the scheduler thread; a clone copies the scan (benchmarks/sampler.py)."""

    def __init__(self, ll: Any, vocab: Any, keep: int = 8) -> None:
        self._ll, self._vocab, self._keep = ll, vocab, keep
        self._made: dict[float, Any] = {}  # multiplier -> sampler having seen nothing, most recently used last

    def make(self, multiplier: float, seen: Sequence[int] = ()) -> Any:
        """A new DRY sampler having seen the last dry.LAST_N of `seen` (the caller frees it)."""
        ll = self._ll
        made = self._made.pop(multiplier, None)
        if made is None:
            made = dry_sampler(ll, self._vocab, multiplier)
            if len(self._made) >= self._keep:
                ll.llama_sampler_free(self._made.pop(next(iter(self._made))))
        self._made[multiplier] = made
        return _seeing(ll, ll.llama_sampler_clone(made), seen)

    def __len__(self) -> int:
        return len(self._made)

    def close(self) -> None:
        for made in self._made.values():
            self._ll.llama_sampler_free(made)
        self._made.clear()


@lru_cache(maxsize=64)
def _grammar(schema_json: str) -> str:
    return schema_to_gbnf(json.loads(schema_json))


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


@dataclass(eq=False)
class _Sampler:
    """A reply's sampler chain (top-k, the penalties, top-p, temperature, then a draw; or the penalties and greedy)
    and, for an output schema, its grammar. The grammar checks only the token the chain chose; the whole vocabulary
    is masked only when it refuses that token, so constrained decoding costs little more than free decoding
    (llama.cpp's own common_sampler does the same)."""

    chain: Any
    grammar: Any = None


class _Context:
    """The llama.cpp context as the scheduler uses it (scheduler.Context): decode, logits, sampling, sequences."""

    def __init__(self, ll: Any, model: Any, ctx: Any, n_batch: int, probe: Probe | None) -> None:
        self._ll, self._ctx, self.probe = ll, ctx, probe
        self._vocab = ll.llama_model_get_vocab(model)
        self._mem = ll.llama_get_memory(ctx)
        self._n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        self.n_batch, self.n_cells = n_batch, ll.llama_n_ctx(ctx)
        self._batch = ll.llama_batch_init(n_batch, 0, 1)
        self._dry = DrySamplers(ll, self._vocab)

    def decode(self, items: Sequence[Item]) -> None:
        b = self._batch
        b.n_tokens = len(items)
        for j, (tok, pos, seq, want) in enumerate(items):
            b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = tok, pos, 1, want
            b.seq_id[j][0] = seq
        rc = self._ll.llama_decode(self._ctx, b)
        if rc != 0:
            raise EngineError(f"llama_decode failed with code {rc}")

    def logprobs(self, index: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        ptr = self._ll.llama_get_logits_ith(self._ctx, index)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).astype(np.float64)
        m = float(logits.max())
        out: np.ndarray[Any, np.dtype[np.float64]] = logits - (m + math.log(float(np.exp(logits - m).sum())))
        return out

    def sampler(self, params: GenParams, seen: Sequence[int] = ()) -> _Sampler:
        ll = self._ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        sampling = params.temperature > 0
        if sampling:
            # top-k first, so the penalties after it look at k candidates instead of the whole vocabulary: less than
            # half the time a reply token of llama-server's order, DRY first (benchmarks/sampler.py). Penalties only
            # lower logits, so the draw differs only when one pushes a candidate out of the top k, and then only in
            # whether the (k+1)-th likeliest token may be drawn: both orders drew the same tokens of 32 replies.
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(params.top_k))
        if params.dry_multiplier > 0:  # DRY over the request's own messages and the reply: no parroting the message
            ll.llama_sampler_chain_add(chain, self._dry.make(params.dry_multiplier, seen))
        if params.repeat_penalty != 1.0:  # over the whole reply; the prompt is not penalised
            penalties = ll.llama_sampler_init_penalties(
                self._n_vocab, params.max_tokens, params.repeat_penalty, 0.0, 0.0
            )
            ll.llama_sampler_chain_add(chain, penalties)
        if not sampling:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        else:
            seed = params.seed if params.seed is not None and params.seed >= 0 else secrets.randbits(32)
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(params.top_p, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(params.temperature))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        if params.schema is None:
            return _Sampler(chain)
        gbnf = _grammar(json.dumps(params.schema, sort_keys=True, ensure_ascii=False))
        grammar = ll.llama_sampler_init_grammar(self._vocab, gbnf.encode(), b"root")
        if not grammar:
            ll.llama_sampler_free(chain)
            raise EngineError("the output schema's grammar was refused by llama.cpp")
        return _Sampler(chain, grammar)

    def keep_dry(self, multiplier: float) -> None:
        """Make now the DRY sampler that replies with this multiplier clone."""
        self._ll.llama_sampler_free(self._dry.make(multiplier))

    def _apply(self, sampler: Any, data: np.ndarray[Any, Any]) -> int:
        """Run a sampler over token candidates (in place); the index it selected."""
        ll = self._ll
        arr = ll.llama_token_data_array(data.ctypes.data_as(ctypes.POINTER(ll.llama_token_data)), len(data), -1, False)
        ll.llama_sampler_apply(sampler, ctypes.byref(arr))
        return int(arr.selected)

    def _candidates(self, index: int) -> np.ndarray[Any, Any]:
        logits = np.ctypeslib.as_array(self._ll.llama_get_logits_ith(self._ctx, index), shape=(self._n_vocab,))
        data = np.empty(self._n_vocab, dtype=_TOKEN_DATA)
        data["id"], data["logit"], data["p"] = np.arange(self._n_vocab), logits, 0
        return data

    def sample(self, sampler: _Sampler, index: int) -> int:
        ll = self._ll
        if sampler.grammar is None:
            return int(ll.llama_sampler_sample(sampler.chain, self._ctx, index))
        data = self._candidates(index)
        token = int(data[self._apply(sampler.chain, data)]["id"])
        one = np.array([(token, 0.0, 0.0)], dtype=_TOKEN_DATA)
        self._apply(sampler.grammar, one)
        if one[0]["logit"] == -np.inf:  # refused: mask the vocabulary with the grammar, then choose again
            data = self._candidates(index)
            self._apply(sampler.grammar, data)
            token = int(data[self._apply(sampler.chain, data)]["id"])
        ll.llama_sampler_accept(sampler.grammar, token)
        ll.llama_sampler_accept(sampler.chain, token)
        return token

    def free_sampler(self, sampler: _Sampler) -> None:
        self._ll.llama_sampler_free(sampler.chain)
        if sampler.grammar is not None:
            self._ll.llama_sampler_free(sampler.grammar)

    def is_eog(self, token: int) -> bool:
        return bool(self._ll.llama_vocab_is_eog(self._vocab, token))

    def piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def tokenize(self, text: str, special: bool = False, add_bos: bool = False) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (self._ll.llama_token * n_max)()
        n = self._ll.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_bos, special)
        if n < 0:
            raise EngineError(f"tokenizer failed on a text of {len(data)} bytes")
        return list(buf[:n])

    def seq_rm(self, seq: int, start: int) -> None:
        self._ll.llama_memory_seq_rm(self._mem, seq, start, -1)

    def seq_cp(self, src: int, dst: int, end: int) -> None:
        self._ll.llama_memory_seq_cp(self._mem, src, dst, 0, end)  # unified cache: the cells gain dst, no copy

    def save(self, seq: int, start: int = 0) -> Any:
        size = self._ll.llama_state_seq_get_size(self._ctx, seq)
        buf = np.empty(size, dtype=np.uint8)
        self._ll.llama_state_seq_get_data(self._ctx, buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)), size, seq)
        if start == 0:
            return buf
        try:
            return kvstate.cells_from(buf, start)
        except ValueError:  # a layout this version does not cut: keep it whole
            return None

    def restore(self, seq: int, *states: Any) -> bool:
        state = states[0] if len(states) == 1 else kvstate.join(*states)
        ptr = state.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        return bool(self._ll.llama_state_seq_set_data(self._ctx, ptr, len(state), seq))

    def close(self) -> None:
        self._ll.llama_batch_free(self._batch)
        self._dry.close()


class LlamaCppEngine(Engine):
    """One llama.cpp model and context serving `parallel` replies and `parallel` classifications at once.

    Every request becomes a job for the scheduler (`scheduler.py`), which decodes the work of all running
    requests together, one `llama_decode` per step: replies stream side by side and a classification goes
    into the next step instead of waiting for replies to end. Task prefixes and chat histories are cached
    per sequence. A request's logits can differ in the last bits with the batch it ran in (measured in
    benchmarks/batching.py).
    """

    def __init__(
        self,
        path: Path,
        *,
        name: str,
        n_ctx: int = 8192,
        cache_mb: int = 256,
        n_threads: int = 2,
        n_batch: int = 512,
        parallel: int = 4,
        prefill_chunk: int = 128,
        score_chunk: int = SCORE_CHUNK,
        probe_layer: int | tuple[int, ...] | None = None,
        kv_f16: bool = True,
        flash_attn: bool = True,
        repack: bool = False,
        native_dir: Path | None = None,
    ) -> None:
        import llama_cpp as ll

        self._ll = ll
        _quiet(ll)
        mparams = ll.llama_model_default_params()
        mparams.use_extra_bufts = repack  # repacked Q4_K weights: see benchmarks/engine_config.py
        self._model = ll.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise ModelError(f"llama.cpp could not load the model file (corrupt or unsupported): {path}")
        probe = None
        if probe_layer is not None:
            n_layer, n_embd = ll.llama_model_n_layer(self._model), ll.llama_model_n_embd(self._model)
            try:
                probe = Probe(ll, probe_layer, n_layer, n_embd, native_dir)
            except ModelError:
                ll.llama_model_free(self._model)
                raise
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = n_batch
        cparams.n_seq_max = Scheduler.n_seq(parallel)
        cparams.kv_unified = True  # one pool of cells: sequences share a task prefix's cells without a copy
        cparams.type_k = cparams.type_v = GGML_TYPE_F16 if kv_f16 else GGML_TYPE_F32
        # flash attention skips the cells of other sequences in the shared pool instead of multiplying them
        cparams.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.n_threads = cparams.n_threads_batch = n_threads
        if probe is not None:
            cparams.cb_eval, cparams.cb_eval_user_data = probe.eval_fn, probe.eval_data
        ctx = ll.llama_init_from_model(self._model, cparams)
        if not ctx:
            ll.llama_model_free(self._model)
            raise ModelError(f"llama.cpp could not create a context of {n_ctx} tokens for {path}")
        self._ctx = _Context(ll, self._model, ctx, n_batch, probe)
        self._raw_ctx = ctx
        self.probe_layer = probe_layer
        self.slots = Slots(generate=parallel, score=parallel)
        vocab = ll.llama_model_get_vocab(self._model)
        self._add_bos = bool(ll.llama_vocab_get_add_bos(vocab))
        self.tokenize_prompt = PromptTokens(self._tokens_of)  # all tokens of a prompt, and how many are the prefix
        bos, eos = ll.llama_vocab_bos(vocab), ll.llama_vocab_eos(vocab)
        self.template = ChatTemplate(self._chat_template(path), self._special(bos), self._special(eos))
        self._n_ctx = self._ctx.n_cells
        details: dict[str, str | int] = {"path": str(path), "cache_mb": cache_mb, "n_threads": n_threads}
        details |= {"n_batch": n_batch, "parallel": parallel, "kv": "f16" if kv_f16 else "f32"}
        details |= {"flash_attn": int(flash_attn), "repack": int(repack)}
        if probe_layer is not None:
            details["probe_layer"] = probe_layer if isinstance(probe_layer, int) else str(probe_layer)
            details["probe_callback"] = "native gate" if probe is not None and probe.native else "python"
        self.info = EngineInfo("llama.cpp", name, self._n_ctx, details)
        self._scheduler = Scheduler(
            self._ctx,
            parallel=parallel,
            cache_bytes=cache_mb << 20,
            prefill_chunk=prefill_chunk,
            score_chunk=score_chunk,
        )

    # --- model metadata and tokens ----------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        size = 1 << 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._ll.llama_model_meta_val_str(self._model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    def _chat_template(self, path: Path) -> str:
        source = self._meta("tokenizer.chat_template")
        if not source:
            raise ModelError(f"the model has no chat template in its GGUF metadata: {path}")
        return source

    def _special(self, token: int) -> str:
        return self._ctx.piece(token, special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    def _tokens_of(self, segments: Sequence[Segment], first: bool) -> list[int]:
        out: list[int] = []
        for i, seg in enumerate(segments):
            out += self._ctx.tokenize(seg.text, special=seg.trusted, add_bos=first and i == 0 and self._add_bos)
        return out

    def render(self, conversation: Conversation) -> Prompt:
        """The conversation in the model's own chat template, split into the cacheable prefix and the rest."""
        return self.template.render(conversation.messages, conversation.n_fixed, conversation.reply_start)

    def preview(self, conversation: Conversation) -> str:
        return self.render(conversation).text

    def count_tokens(self, text: str) -> int:
        return len(self._ctx.tokenize(text))

    def _tokens(self, prompt: Prompt) -> tuple[list[int], int]:
        tokens, n_prefix = self.tokenize_prompt(prompt)
        if len(tokens) >= self._n_ctx:
            raise ContextOverflow(f"the prompt is {len(tokens)} tokens; the context holds {self._n_ctx}")
        return tokens, n_prefix

    # --- requests, as jobs for the scheduler --------------------------------------------------------

    def _score_job(self, prompt: Prompt, continuations: Sequence[str], hidden: bool) -> ScoreJob:
        if hidden and self._ctx.probe is None:
            raise EngineError("hidden states need an engine loaded with a probe layer (a learned head's)")
        conts = [self._ctx.tokenize(c) for c in continuations]
        if not all(conts):
            raise EngineError(f"a continuation has no tokens: {list(continuations)}")
        tokens, n_prefix = self._tokens(prompt)
        return ScoreJob(tokens, n_prefix, conts=conts, hidden=hidden)

    def _wait(self, jobs: Sequence[ScoreJob]) -> list[Scores]:
        try:
            for job in jobs:
                job.done.wait()
        finally:
            for job in jobs:
                if not job.done.is_set():
                    self._scheduler.cancel(job)
        for job in jobs:
            if job.error is not None:
                raise job.error
        return [job.result for job in jobs if job.result is not None]

    def score(self, conversation: Conversation, continuations: Sequence[str], hidden: bool = False) -> Scores:
        return self.score_prompt(self.render(conversation), continuations, hidden)

    def warm(self, conversation: Conversation, params: GenParams | None = None) -> None:
        self.score(conversation, ["。"])  # computes and keeps the prefix
        if params is not None and params.dry_multiplier > 0:  # the DRY sampler its replies clone (DrySamplers)
            self._scheduler.call(lambda: self._ctx.keep_dry(params.dry_multiplier))

    def score_prompt(self, prompt: Prompt, continuations: Sequence[str], hidden: bool = False) -> Scores:
        """`score` on a rendered prompt (its prefix is what gets cached)."""
        job = self._score_job(prompt, continuations, hidden)
        self._scheduler.submit(job)
        return self._wait([job])[0]

    def score_batch(
        self, conversations: Sequence[Conversation], continuations: Sequence[str], hidden: bool = False
    ) -> list[Scores]:
        """All of them submitted at once: the scheduler decodes up to `parallel` of them per step (with `hidden`,
        each sequence's hidden-state rows are read from the batch it ran in)."""
        jobs = [self._score_job(self.render(c), continuations, hidden) for c in conversations]
        for job in jobs:
            self._scheduler.submit(job)
        return self._wait(jobs)

    def stream(self, conversation: Conversation, params: GenParams) -> Iterator[Chunk]:
        tokens, n_prefix = self._tokens(self.render(conversation))
        job = GenJob(tokens, n_prefix, params=params, n_ctx=self._n_ctx, keep=True)
        return self._follow(job)

    def complete(self, prompt: str, params: GenParams, echo: bool = False) -> Iterator[Chunk]:
        """Continue raw text (tokenized as plain text: no control tokens); `echo` sends the prompt's tokens and,
        with params.logprobs, their logprobs first; max_tokens 0 with echo scores the prompt only."""
        tokens = self._ctx.tokenize(prompt, add_bos=self._add_bos)
        if len(tokens) >= self._n_ctx:
            raise ContextOverflow(f"the prompt is {len(tokens)} tokens; the context holds {self._n_ctx}")
        return self._follow(GenJob(tokens, 0, params=params, n_ctx=self._n_ctx, echo=echo))

    def _follow(self, job: GenJob) -> Iterator[Chunk]:
        """The job's chunks as they come; closing the iterator cancels it (its sequence is freed next step)."""
        self._scheduler.submit(job)
        try:
            while True:
                item = job.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            self._scheduler.cancel(job)

    def clear_cache(self) -> None:
        """Drop every cached task prefix and chat state, so the next call computes its whole prompt."""
        self._scheduler.call(self._scheduler.clear)

    @property
    def running(self) -> int:
        """Requests holding a sequence now (a closed stream's is freed at the next step)."""
        return self._scheduler.running

    @property
    def steps(self) -> int:
        """Decodes run so far (every one batches the work of all running requests)."""
        return self._scheduler.steps

    def busy(self) -> Busy:
        return Busy(self._scheduler.steps, self._scheduler.busy_s)

    def close(self) -> None:
        if self._raw_ctx:
            self._scheduler.close()
            self._ctx.close()
            self._ll.llama_free(self._raw_ctx)
            self._ll.llama_model_free(self._model)
            self._raw_ctx = self._model = None
