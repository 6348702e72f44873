"""Thin wrapper over one llama.cpp model and context (llama-cpp-python's low-level API)."""

from __future__ import annotations

import codecs
import ctypes
import math
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ContextOverflow, EngineError, ModelError
from .base import Chunk, Engine, EngineInfo, GenParams, Message, Prompt, PromptTokens, Scores, Segment, Usage
from .stops import StopBuffer
from .template import ChatTemplate

_log_callback: Any = None  # keeps the ctypes callback alive


def _quiet(ll: Any) -> None:
    """Silence llama.cpp's own logging on stderr; our errors say what went wrong."""
    global _log_callback
    if _log_callback is None:
        _log_callback = ll.llama_log_callback(lambda level, text, user_data: None)
        ll.llama_log_set(_log_callback, ctypes.c_void_p(0))
        ll.llama_backend_init()


class _Probe:
    """Reads one layer's hidden states while llama.cpp computes them (the scheduler's eval callback).

    Only installed when a learned head asks for it: the callback runs for every graph node of every
    decode, which costs a few per cent of generation speed.
    """

    def __init__(self, ll: Any, layer: int, n_layer: int, n_embd: int) -> None:
        if not 0 <= layer < n_layer - 1:  # the last layer's output keeps only the rows asked for
            raise ModelError(f"probe layer must be in 0..{n_layer - 2} for this model, not {layer}")
        lib = ctypes.CDLL(str(Path(ll.__file__).parent / "lib" / "libggml-base.so"))
        lib.ggml_get_name.restype, lib.ggml_get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        lib.ggml_nelements.restype, lib.ggml_nelements.argtypes = ctypes.c_int64, [ctypes.c_void_p]
        lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        self._lib, self._name, self._n_embd = lib, f"l_out-{layer}".encode(), n_embd
        self._on = False
        self._sum: np.ndarray[Any, np.dtype[np.float64]] | None = None
        self._rows = 0
        self.callback = ll.ggml_backend_sched_eval_callback(self._eval)  # kept alive with the engine

    def _eval(self, tensor: int, ask: bool, _user_data: int) -> bool:
        if not self._on:
            return not ask  # ask: "do you want this tensor?" no; after compute: "continue?" yes
        if ask:
            return bool(self._lib.ggml_get_name(tensor) == self._name)
        n = self._lib.ggml_nelements(tensor)
        data = np.empty(n, dtype=np.float32)
        self._lib.ggml_backend_tensor_get(tensor, data.ctypes.data, 0, n * 4)
        rows = data.reshape(-1, self._n_embd).astype(np.float64)
        self._sum = rows.sum(axis=0) if self._sum is None else self._sum + rows.sum(axis=0)
        self._rows += len(rows)
        return True

    def start(self) -> None:
        self._on, self._sum, self._rows = True, None, 0

    def stop(self) -> None:
        self._on = False

    def mean(self) -> list[float]:
        if self._sum is None or not self._rows:
            raise EngineError("the probe layer was not computed")
        out: list[float] = (self._sum / self._rows).tolist()
        return out


@dataclass(eq=False)
class _Saved:
    """A saved KV state of the live sequence and the tokens it holds."""

    tokens: list[int]
    state: Any  # ctypes uint8 array from llama_state_seq_get_data
    pinned: bool = False  # a task prefix: kept until the cache is cleared
    used: int = 0  # LRU clock


class LlamaCppEngine(Engine):
    """One llama.cpp context holding one live sequence, plus saved sequence states.

    Caching: a task's fixed prefix (system prompt, examples) is evaluated once and its KV state saved
    (pinned); a request restores it (a memcpy) and evaluates only its own tokens. After a reply the
    conversation's state is saved, so the next chat turn evaluates only the new message. Only states
    that are a whole prefix of the prompt are reused and the KV layout stays canonical (cell i holds
    position i), so a prompt always gives bit-identical logits, whatever ran before it.

    Concurrency: one context guarded by one lock, so calls run one at a time in arrival order.
    A stream holds the lock until it is exhausted or closed; close it to free the engine.
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
        batch_size: int = 4,
        batch_ctx: int = 4096,
        probe_layer: int | None = None,
    ) -> None:
        import llama_cpp as ll

        self._ll = ll
        _quiet(ll)
        mparams = ll.llama_model_default_params()
        mparams.use_extra_bufts = False  # repacked Q4_K weights measured slower here (0.29 s vs 0.22 s)
        self._model = ll.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise ModelError(f"llama.cpp could not load the model file (corrupt or unsupported): {path}")
        self._vocab = ll.llama_model_get_vocab(self._model)
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = cparams.n_ubatch = n_batch
        cparams.n_seq_max = 1
        # F32 KV without flash attention: restored states give bit-identical logits (with F16, rounding
        # plus the int8 re-quantization of activations made results drift with the batch shape).
        cparams.type_k = cparams.type_v = 0  # GGML_TYPE_F32
        cparams.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.n_threads = cparams.n_threads_batch = n_threads
        self._probe = None
        if probe_layer is not None:
            n_layer, n_embd = ll.llama_model_n_layer(self._model), ll.llama_model_n_embd(self._model)
            try:
                self._probe = _Probe(ll, probe_layer, n_layer, n_embd)
            except ModelError:
                ll.llama_model_free(self._model)
                raise
            cparams.cb_eval = self._probe.callback
        self.probe_layer = probe_layer
        self._ctx = ll.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            ll.llama_model_free(self._model)
            raise ModelError(f"llama.cpp could not create a context of {n_ctx} tokens for {path}")
        self._mem = ll.llama_get_memory(self._ctx)
        self._n_ctx = ll.llama_n_ctx(self._ctx)
        self._n_batch = n_batch
        self._n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        self._batch = ll.llama_batch_init(n_batch, 0, 1)
        self._add_bos = bool(ll.llama_vocab_get_add_bos(self._vocab))
        self._live: list[int] = []  # tokens held by sequence 0; cell i holds position i
        self._live_state: _Saved | None = None  # the saved state the live sequence starts with
        self._saved: list[_Saved] = []
        self._cache_bytes = cache_mb << 20
        self._clock = 0
        self._lock = threading.Lock()
        self.tokenize_prompt = PromptTokens(self._tokens_of)  # all tokens of a prompt, and how many are the prefix
        self._n_threads, self._batch_size, self._batch_ctx = n_threads, batch_size, batch_ctx
        self._bctx: Any = None  # the batch context, created on first use (see score_batch)
        self._bprefix: list[int] = []  # the task prefix held by the batch context's sequence 0
        bos, eos = ll.llama_vocab_bos(self._vocab), ll.llama_vocab_eos(self._vocab)
        self.template = ChatTemplate(self._chat_template(path), self._special(bos), self._special(eos))
        details: dict[str, str | int] = {"path": str(path), "cache_mb": cache_mb, "n_threads": n_threads}
        details |= {"n_batch": n_batch} | ({"probe_layer": probe_layer} if probe_layer is not None else {})
        self.info = EngineInfo(
            "llama.cpp",
            name,
            self._n_ctx,
            details,
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

    def _piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._ll.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._ll.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def _special(self, token: int) -> str:
        return self._piece(token, special=True).decode("utf-8", errors="replace") if token >= 0 else ""

    def _tokenize(self, text: str, *, special: bool, add_bos: bool = False) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (self._ll.llama_token * n_max)()
        n = self._ll.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_bos, special)
        if n < 0:
            raise EngineError(f"tokenizer failed on a text of {len(data)} bytes")
        return list(buf[:n])

    def _tokens_of(self, segments: Sequence[Segment], first: bool) -> list[int]:
        out: list[int] = []
        for i, seg in enumerate(segments):
            out += self._tokenize(seg.text, special=seg.trusted, add_bos=first and i == 0 and self._add_bos)
        return out

    def render(self, messages: Sequence[Message], n_fixed: int) -> Prompt:
        return self.template.render(messages, n_fixed)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenize(text, special=False))

    # --- the live sequence and saved states -------------------------------------------------------

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _decode(self, tokens: list[int], logits_all: bool = False, logits_last: bool = True) -> None:
        """Append tokens to the live sequence; logits for the last token (or all of them, or none)."""
        ll, b = self._ll, self._batch
        for start in range(0, len(tokens), self._n_batch):
            chunk = tokens[start : start + self._n_batch]
            last = logits_last and start + len(chunk) == len(tokens)
            pos0 = len(self._live)
            b.n_tokens = len(chunk)
            for j, tok in enumerate(chunk):
                b.token[j], b.pos[j], b.n_seq_id[j] = tok, pos0 + j, 1
                b.seq_id[j][0] = 0
                b.logits[j] = logits_all or (last and j == len(chunk) - 1)
            rc = ll.llama_decode(self._ctx, b)
            if rc != 0:
                raise EngineError(f"llama_decode failed with code {rc}")
            self._live += chunk

    def _truncate(self, n: int) -> None:
        if n < len(self._live):
            self._ll.llama_memory_seq_rm(self._mem, 0, n, -1)
            del self._live[n:]

    def _save(self, pinned: bool) -> _Saved:
        """Save the live sequence's KV state; unpinned states are evicted least recently used first."""
        ll, live = self._ll, self._live
        size = ll.llama_state_seq_get_size(self._ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        ll.llama_state_seq_get_data(self._ctx, buf, size, 0)
        # an unpinned state that this one extends is superseded (the previous turn of the same chat)
        self._saved = [s for s in self._saved if s.pinned or s.tokens != live[: len(s.tokens)]]
        saved = _Saved(list(live), buf, pinned, self._tick())
        self._saved.append(saved)
        while sum(len(s.state) for s in self._saved) > self._cache_bytes:
            unpinned = [s for s in self._saved if not s.pinned and s is not saved]
            if not unpinned:
                break
            self._saved.remove(min(unpinned, key=lambda s: s.used))
        self._live_state = saved
        return saved

    def _load(self, base: _Saved | None) -> None:
        """Make the live sequence hold exactly `base` (nothing if None), restoring it unless it is there."""
        if base is None:
            self._truncate(0)
        elif self._live_state is base and self._live[: len(base.tokens)] == base.tokens:
            self._truncate(len(base.tokens))  # the live sequence grew from base: cut back to it
        else:
            self._ll.llama_memory_clear(self._mem, True)
            self._live = []
            if self._ll.llama_state_seq_set_data(self._ctx, base.state, len(base.state), 0) == 0:
                self._saved.remove(base)
                raise EngineError("could not restore a cached KV state")
            self._live = list(base.tokens)
        self._live_state = base
        if base is not None:
            base.used = self._tick()

    def _prepare(self, prompt: Prompt, reuse_history: bool) -> tuple[Usage, list[int]]:
        """Load the saved state the prompt starts with; the caller evaluates the rest of `tokens`.

        Only a saved state that is a whole prefix of the prompt is reused, and a task's fixed prefix is
        always evaluated on its own, so a prompt is always evaluated in the same batches and gives
        bit-identical logits (the batch shape changes the last bits of the matmuls). Classification
        (`reuse_history=False`) reuses exactly the task prefix.
        """
        tokens, n_prefix = self.tokenize_prompt(prompt)
        if len(tokens) >= self._n_ctx:
            raise ContextOverflow(f"the prompt is {len(tokens)} tokens; the context holds {self._n_ctx}")
        computed = 0
        prefix = tokens[:n_prefix] if 0 < n_prefix < len(tokens) else []
        base = next((s for s in self._saved if s.pinned and s.tokens == prefix), None) if prefix else None
        if prefix and base is None:
            self._load(None)
            self._decode(prefix)
            base = self._save(pinned=True)
            computed = n_prefix
        if reuse_history:
            fits = [s for s in self._saved if len(s.tokens) < len(tokens) and tokens[: len(s.tokens)] == s.tokens]
            base = max(fits, key=lambda s: len(s.tokens), default=None)
        self._load(base)
        return Usage(prompt_tokens=len(tokens), cached_tokens=max(0, len(self._live) - computed)), tokens

    def _save_turn(self, prompt_tokens: list[int], text: str) -> None:
        """Save where the next chat turn starts: prompt plus reply when the reply's tokens are what its
        text re-tokenizes to (the next prompt then extends them), else the prompt alone."""
        if self._live[len(prompt_tokens) :] != self._tokenize(text, special=False):
            self._truncate(len(prompt_tokens))
        self._save(pinned=False)

    def clear_cache(self) -> None:
        """Drop the live sequence and every saved state, so the next call computes its whole prompt."""
        with self._lock:
            self._ll.llama_memory_clear(self._mem, True)
            self._live, self._saved, self._live_state = [], [], None
            if self._bctx is not None:
                self._ll.llama_memory_clear(self._bmem, True)
                self._bprefix = []

    # --- scoring and generation -------------------------------------------------------------------

    def _logprobs(self, index: int, ctx: Any = None) -> np.ndarray[Any, np.dtype[np.float64]]:
        ptr = self._ll.llama_get_logits_ith(self._ctx if ctx is None else ctx, index)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).astype(np.float64)
        m = float(logits.max())
        out: np.ndarray[Any, np.dtype[np.float64]] = logits - (m + math.log(float(np.exp(logits - m).sum())))
        return out

    def score(self, prompt: Prompt, continuations: Sequence[str], hidden: bool = False) -> Scores:
        ll = self._ll
        with self._lock:
            usage, tokens = self._prepare(prompt, reuse_history=False)
            # The last token always gets a batch of its own: llama.cpp outputs every token of a batch in
            # embeddings mode, and this keeps the logits identical whether the hidden state is read or not.
            probe = self._probe if hidden else None
            if probe is not None:
                probe.start()
            try:
                self._decode(tokens[len(self._live) : -1], logits_last=False)
                ll.llama_set_embeddings(self._ctx, hidden)
                self._decode(tokens[-1:])
                state = None
                if hidden:
                    n_embd = ll.llama_model_n_embd(self._model)
                    state = np.ctypeslib.as_array(ll.llama_get_embeddings_ith(self._ctx, -1), shape=(n_embd,)).tolist()
                    state = (probe.mean() + state) if probe is not None else state
            finally:
                ll.llama_set_embeddings(self._ctx, False)
                if probe is not None:
                    probe.stop()
            first = self._logprobs(-1)
            n_prompt = len(self._live)
            out = []
            for text in continuations:
                toks = self._tokenize(text, special=False)
                if not toks:
                    raise EngineError(f"continuation {text!r} has no tokens")
                total = float(first[toks[0]])
                if len(toks) > 1:  # later tokens need the logits after each earlier one
                    self._decode(toks[:-1], logits_all=True)
                    total += sum(float(self._logprobs(j)[t]) for j, t in enumerate(toks[1:]))
                    self._truncate(n_prompt)
                out.append(total)
            return Scores(out, usage, state)

    # --- batched scoring: several prompts over one task prefix in one llama_decode -------------------

    def _batch_context(self) -> Any:
        """A second context over the same weights with one KV cache shared by several sequences:
        sequence 0 holds the task prefix, sequences 1..batch_size copies of it (shared cells) plus a text."""
        if self._bctx is None:
            ll, p = self._ll, self._ll.llama_context_default_params()
            p.n_ctx = p.n_batch = self._batch_ctx
            p.n_ubatch = self._n_batch
            p.n_seq_max = self._batch_size + 1
            p.kv_unified = True
            p.type_k = p.type_v = 0  # GGML_TYPE_F32, as in the main context
            p.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
            p.n_threads = p.n_threads_batch = self._n_threads
            ctx = ll.llama_init_from_model(self._model, p)
            if not ctx:
                raise ModelError(f"llama.cpp could not create a batch context of {self._batch_ctx} tokens")
            self._bctx, self._bmem = ctx, ll.llama_get_memory(ctx)
            self._bbatch = ll.llama_batch_init(self._batch_ctx, 0, 1)
        return self._bctx

    def _bdecode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence, wants logits) items in the batch context."""
        b = self._bbatch
        b.n_tokens = len(items)
        for j, (tok, pos, seq, want) in enumerate(items):
            b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = tok, pos, 1, want
            b.seq_id[j][0] = seq
        rc = self._ll.llama_decode(self._bctx, b)
        if rc != 0:
            raise EngineError(f"llama_decode failed with code {rc}")

    def score_batch(self, prompts: Sequence[Prompt], continuations: Sequence[str]) -> list[Scores]:
        """Score prompts that share a task prefix as multi-sequence batches of up to `batch_size` texts.

        The prefix is computed once (or restored from the main context's pinned state); each text's own
        tokens of a group are decoded in one llama_decode call. Measured here (benchmarks/batching.py) this
        is faster in texts/s than one at a time; the logits differ from `score` only in the last bits.
        """
        tokenized = [self.tokenize_prompt(p) for p in prompts]
        by_prefix: dict[tuple[int, ...], list[int]] = {}
        for i, (t, n) in enumerate(tokenized):
            if 0 < n < len(t) and len(t) + 8 <= self._batch_ctx:
                by_prefix.setdefault(tuple(t[:n]), []).append(i)
        out: list[Scores | None] = [None] * len(prompts)
        if self._batch_size >= 2 and any(len(g) >= 2 for g in by_prefix.values()):
            conts = [self._tokenize(c, special=False) for c in continuations]
            if not all(conts):
                raise EngineError("a continuation has no tokens")
            with self._lock:
                for prefix, members in by_prefix.items():
                    if len(members) >= 2:
                        self._score_prefix_group(prompts[members[0]], list(prefix), members, tokenized, conts, out)
        return [s if s is not None else self.score(p, continuations) for s, p in zip(out, prompts, strict=True)]

    def _score_prefix_group(
        self,
        first: Prompt,
        prefix: list[int],
        members: list[int],
        tokenized: list[tuple[list[int], int]],
        conts: list[list[int]],
        out: list[Scores | None],
    ) -> None:
        """Score prompts sharing `prefix` in groups of up to batch_size that fit the batch context."""
        self._batch_context()
        if self._bprefix != prefix:
            self._prepare(first, reuse_history=False)  # computes and pins the prefix state if needed
            saved = next(s for s in self._saved if s.pinned and s.tokens == prefix)
            self._ll.llama_memory_clear(self._bmem, True)
            self._bprefix = []
            if self._ll.llama_state_seq_set_data(self._bctx, saved.state, len(saved.state), 0) == 0:
                raise EngineError("could not copy the task prefix into the batch context")
            self._bprefix = prefix
        n_prefix, used = len(prefix), len(prefix)
        group: list[int] = []
        for i in members:
            need = len(tokenized[i][0]) - n_prefix + max(len(c) for c in conts)
            if group and (len(group) == self._batch_size or used + need > self._batch_ctx):
                self._score_group(group, tokenized, n_prefix, conts, out)
                group, used = [], n_prefix
            group.append(i)
            used += need
        self._score_group(group, tokenized, n_prefix, conts, out)

    def _score_group(
        self,
        group: list[int],
        tokenized: list[tuple[list[int], int]],
        n_prefix: int,
        conts: list[list[int]],
        out: list[Scores | None],
    ) -> None:
        ll, mem = self._ll, self._bmem
        try:
            items: list[tuple[int, int, int, bool]] = []
            last: list[int] = []
            for seq, i in enumerate(group, 1):
                ll.llama_memory_seq_cp(mem, 0, seq, 0, n_prefix)
                suffix = tokenized[i][0][n_prefix:]
                items += [(t, n_prefix + j, seq, j == len(suffix) - 1) for j, t in enumerate(suffix)]
                last.append(len(items) - 1)
            self._bdecode(items)
            totals = [[float(lp[c[0]]) for c in conts] for lp in (self._logprobs(j, self._bctx) for j in last)]
            for k, cont in enumerate(conts):
                if len(cont) == 1:
                    continue
                items = [
                    (t, len(tokenized[i][0]) + j, seq, True)
                    for seq, i in enumerate(group, 1)
                    for j, t in enumerate(cont[:-1])
                ]
                self._bdecode(items)
                for g, i in enumerate(group):
                    base = g * (len(cont) - 1)
                    totals[g][k] += sum(float(self._logprobs(base + j, self._bctx)[t]) for j, t in enumerate(cont[1:]))
                    ll.llama_memory_seq_rm(mem, g + 1, len(tokenized[i][0]), -1)
            for g, i in enumerate(group):
                out[i] = Scores(totals[g], Usage(prompt_tokens=len(tokenized[i][0]), cached_tokens=n_prefix))
        finally:
            for seq in range(1, len(group) + 1):
                ll.llama_memory_seq_rm(mem, seq, -1, -1)

    def _sampler(self, params: GenParams) -> Any:
        ll = self._ll
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if params.grammar:
            grammar = ll.llama_sampler_init_grammar(self._vocab, params.grammar.encode(), b"root")
            if not grammar:
                ll.llama_sampler_free(chain)
                raise EngineError("invalid grammar")
            ll.llama_sampler_chain_add(chain, grammar)
        if params.repeat_penalty != 1.0:  # over the whole reply; the prompt is not penalised
            penalties = ll.llama_sampler_init_penalties(
                self._n_vocab, params.max_tokens, params.repeat_penalty, 0.0, 0.0
            )
            ll.llama_sampler_chain_add(chain, penalties)
        if params.temperature <= 0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_greedy())
        else:
            seed = params.seed if params.seed is not None and params.seed >= 0 else secrets.randbits(32)
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(params.top_k))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(params.top_p, 1))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(params.temperature))
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def stream(self, prompt: Prompt, params: GenParams) -> Iterator[Chunk]:
        ll = self._ll
        with self._lock:
            usage, prompt_tokens = self._prepare(prompt, reuse_history=True)
            self._decode(prompt_tokens[len(self._live) :])
            sampler = self._sampler(params)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            stops = StopBuffer(params.stop)
            texts: list[str] = []
            finish = "length"
            try:
                for _ in range(params.max_tokens):
                    token = ll.llama_sampler_sample(sampler, self._ctx, -1)
                    if ll.llama_vocab_is_eog(self._vocab, token):
                        finish = "stop"
                        break
                    usage.completion_tokens += 1
                    text = stops.push(decoder.decode(self._piece(token)))
                    if text:
                        texts.append(text)
                        yield Chunk(text)
                    if stops.stopped:
                        finish = "stop"
                        break
                    if len(self._live) + 1 >= self._n_ctx:
                        break
                    self._decode([token])
            finally:
                ll.llama_sampler_free(sampler)
                self._save_turn(prompt_tokens, "".join(texts))
            tail = "" if stops.stopped else stops.push(decoder.decode(b"", final=True)) + stops.flush()
            yield Chunk(tail, finish, usage)  # type: ignore[arg-type]

    def close(self) -> None:
        with self._lock:
            if self._bctx is not None:
                self._ll.llama_batch_free(self._bbatch)
                self._ll.llama_free(self._bctx)
                self._bctx = None
            if self._ctx:
                self._ll.llama_batch_free(self._batch)
                self._ll.llama_free(self._ctx)
                self._ll.llama_model_free(self._model)
                self._ctx = self._model = None
