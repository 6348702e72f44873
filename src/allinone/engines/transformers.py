"""Thin wrapper over a Hugging Face transformers causal LM (a hub id, a local dir, or a GGUF file dequantized)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ContextOverflow, EngineError, ModelError
from . import dry
from .base import (
    Chunk,
    Conversation,
    Engine,
    EngineInfo,
    GenParams,
    Prompt,
    PromptTokens,
    Scores,
    Segment,
    TokenLogprob,
    Usage,
)
from .stops import StopBuffer
from .template import ChatTemplate

_TURN_ENDS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>")  # chat templates' end-of-turn tokens


@dataclass(eq=False)
class _SavedCache:
    """A KV cache (a transformers Cache object) and the tokens it holds."""

    tokens: list[int]
    cache: Any
    pinned: bool = False  # a task prefix: kept until the cache is cleared
    used: int = 0  # LRU clock


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' asked for, but torch sees no CUDA device")
    return device


def _crop(cache: Any, n: int) -> None:
    """Keep the first n tokens of a cache (`crop` takes a negative count of tokens to drop)."""
    extra = cache.get_seq_length() - n
    if extra > 0:
        cache.crop(-extra)


class TransformersEngine(Engine):
    """One transformers model and tokenizer, plus saved KV caches (`DynamicCache`).

    Caching: a task's fixed prefix is evaluated once and its cache pinned; a request works on a copy of
    it and evaluates only its own tokens. After a reply the conversation's cache is saved, so the next
    chat turn evaluates only the new message. Only caches that are a whole prefix of the prompt are used.

    Concurrency: one lock, so calls run one at a time (`slots` 1 and 1: a classification waits for a running
    reply); a stream holds it until exhausted or closed.
    """

    def __init__(
        self,
        source: str | Path,
        *,
        name: str,
        gguf_file: str | None = None,
        dtype: str = "float32",
        device: str = "auto",
        n_ctx: int = 8192,
        cache_mb: int = 256,
        n_threads: int = 2,
        probe_layer: int | None = None,
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise ModelError("the transformers engine needs: pip install 'qwen-allinone[transformers]'") from e

        torch.set_num_threads(n_threads)
        self.probe_layer = probe_layer
        self._torch = torch
        self._device = _resolve_device(device)
        kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer: Any = AutoTokenizer.from_pretrained(str(source), **kwargs)
            model: Any = AutoModelForCausalLM.from_pretrained(str(source), dtype=getattr(torch, dtype), **kwargs)
            self.model: Any = model.to(self._device)
        except (OSError, ValueError) as e:  # not found offline, not a model dir, unsupported GGUF
            raise ModelError(f"transformers could not load '{source}': {e}") from e
        self.model.eval()
        source_text = self.tokenizer.chat_template
        if not isinstance(source_text, str) or not source_text:
            raise ModelError(f"the model has no chat template: {source}")
        self.template = ChatTemplate(source_text, self.tokenizer.bos_token or "", self.tokenizer.eos_token or "")
        self._eog = self._end_tokens()
        cfg = self.model.config
        self._n_ctx = min(n_ctx, getattr(cfg, "max_position_embeddings", n_ctx))
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self._bytes_per_token = 2 * cfg.num_hidden_layers * kv_heads * head_dim * self.model.dtype.itemsize
        self._cache_bytes = cache_mb << 20
        self._saved: list[_SavedCache] = []
        self._clock = 0
        self._lock = threading.Lock()
        self._llg_tokenizer: Any = None  # llguidance's view of the tokenizer, for output schemas (built on first use)
        self._breakers: frozenset[int] | None = None  # tokens that end a DRY repeat (found on first use)
        self.tokenize_prompt = PromptTokens(self._tokens_of)  # all tokens of a prompt, and how many are the prefix
        self.info = EngineInfo(
            "transformers",
            name,
            self._n_ctx,
            {"source": str(source), "gguf_file": gguf_file or "", "dtype": dtype, "device": self._device},
        )

    # --- tokens -----------------------------------------------------------------------------------

    def _end_tokens(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        eos = self.model.generation_config.eos_token_id
        ids |= set(eos) if isinstance(eos, list) else {eos}
        vocab = self.tokenizer.get_vocab()
        ids |= {vocab[t] for t in _TURN_ENDS if t in vocab and t in self.template.source}
        return {i for i in ids if i is not None}

    def _tokenize(self, text: str, *, special: bool) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False, split_special_tokens=not special).input_ids
        return ids

    def _tokens_of(self, segments: Sequence[Segment], first: bool = False) -> list[int]:  # no BOS to add
        return [t for seg in segments for t in self._tokenize(seg.text, special=seg.trusted)]

    def render(self, conversation: Conversation) -> Prompt:
        """The conversation in the model's own chat template, split into the cacheable prefix and the rest."""
        return self.template.render(conversation.messages, conversation.n_fixed, conversation.reply_start)

    def preview(self, conversation: Conversation) -> str:
        return self.render(conversation).text

    def count_tokens(self, text: str) -> int:
        return len(self._tokenize(text, special=False))

    # --- KV caches --------------------------------------------------------------------------------

    def _forward(self, tokens: list[int], cache: Any, hidden: bool = False) -> Any:
        """Evaluate tokens after what `cache` holds (the cache grows); the model output."""
        ids = self._torch.tensor([tokens], device=self._device)
        return self.model(input_ids=ids, past_key_values=cache, use_cache=True, output_hidden_states=hidden)

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _save(self, tokens: list[int], cache: Any, pinned: bool) -> _SavedCache:
        """Keep a cache; unpinned ones are evicted least recently used first, a superseded chat turn at once."""
        self._clock += 1
        self._saved = [s for s in self._saved if s.pinned or s.tokens != tokens[: len(s.tokens)]]
        saved = _SavedCache(list(tokens), cache, pinned, self._clock)
        self._saved.append(saved)
        while sum(len(s.tokens) for s in self._saved) * self._bytes_per_token > self._cache_bytes:
            unpinned = [s for s in self._saved if not s.pinned and s is not saved]
            if not unpinned:
                break
            self._saved.remove(min(unpinned, key=lambda s: s.used))
        return saved

    def _prepare(self, prompt: Prompt, reuse_history: bool) -> tuple[Usage, list[int], int, Any, int]:
        """Tokens of the prompt, how many of them are the task's fixed prefix, a private cache holding a saved start
        of it, and how many tokens that cache holds.

        The task's fixed prefix is evaluated on its own and pinned; classification reuses exactly it.
        """
        tokens, n_prefix = self.tokenize_prompt(prompt)
        if len(tokens) >= self._n_ctx:
            raise ContextOverflow(f"the prompt is {len(tokens)} tokens; the context holds {self._n_ctx}")
        computed = 0
        prefix = tokens[:n_prefix] if 0 < n_prefix < len(tokens) else []
        base = next((s for s in self._saved if s.pinned and s.tokens == prefix), None) if prefix else None
        if prefix and base is None:
            cache = self._new_cache()
            self._forward(prefix, cache)
            base, computed = self._save(prefix, cache, pinned=True), n_prefix
        if reuse_history:
            fits = [s for s in self._saved if len(s.tokens) < len(tokens) and tokens[: len(s.tokens)] == s.tokens]
            base = max(fits, key=lambda s: len(s.tokens), default=None)
        if base is None:
            return Usage(prompt_tokens=len(tokens)), tokens, n_prefix, self._new_cache(), 0
        self._clock += 1
        base.used = self._clock
        usage = Usage(prompt_tokens=len(tokens), cached_tokens=len(base.tokens) - computed)
        return usage, tokens, n_prefix, copy.deepcopy(base.cache), len(base.tokens)

    def clear_cache(self) -> None:
        """Drop every saved cache, so the next call computes its whole prompt."""
        with self._lock:
            self._saved = []

    # --- scoring and generation -------------------------------------------------------------------

    def score(self, conversation: Conversation, continuations: Sequence[str], hidden: bool = False) -> Scores:
        return self.score_prompt(self.render(conversation), continuations, hidden)

    def warm(self, conversation: Conversation, params: GenParams | None = None) -> None:
        self.score(conversation, ["。"])  # computes and keeps the prefix

    def score_prompt(self, prompt: Prompt, continuations: Sequence[str], hidden: bool = False) -> Scores:
        """`score` on a rendered prompt (its prefix is what gets cached)."""
        torch = self._torch
        with self._lock, torch.inference_mode():
            usage, tokens, _, cache, n_cached = self._prepare(prompt, reuse_history=False)
            out = self._forward(tokens[n_cached:], cache, hidden)
            first = torch.log_softmax(out.logits[0, -1].double(), -1)
            state = out.hidden_states[-1][0, -1].double().tolist() if hidden else None
            if state is not None and isinstance(self.probe_layer, int):  # hidden_states[0] is the embeddings
                state = out.hidden_states[self.probe_layer + 1][0].double().mean(0).tolist() + state
            scores = []
            for text in continuations:
                toks = self._tokenize(text, special=False)
                if not toks:
                    raise EngineError(f"continuation {text!r} has no tokens")
                total = float(first[toks[0]])
                if len(toks) > 1:  # later tokens need the logits after each earlier one
                    logits = self._forward(toks[:-1], cache).logits[0].double()
                    total += float(torch.log_softmax(logits, -1)[torch.arange(len(toks) - 1), toks[1:]].sum())
                    _crop(cache, len(tokens))
                scores.append(total)
            return Scores(scores, usage, state)

    def _dry_breakers(self) -> frozenset[int]:
        """The tokens whose text holds one of DRY's breakers (found once, on the first use of DRY)."""
        if self._breakers is None:
            pieces = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
            self._breakers = frozenset(i for i, p in enumerate(pieces) if any(b in p for b in dry.BREAKERS))
        return self._breakers

    def _sample(self, logits: Any, params: GenParams, generator: Any, reply: list[int], seen: list[int]) -> int:
        torch = self._torch
        if params.dry_multiplier > 0:
            costs = dry.penalties(seen + reply, params.dry_multiplier, self._dry_breakers())
            if costs:
                ids = torch.tensor(list(costs), device=logits.device)
                logits = logits.clone()
                logits[ids] -= torch.tensor(list(costs.values()), dtype=logits.dtype, device=logits.device)
        if params.repeat_penalty != 1.0 and reply:  # as llama.cpp: divide positive logits, multiply negative ones
            seen = torch.tensor(sorted(set(reply)), device=logits.device)
            picked = logits[seen]
            logits = logits.clone()
            logits[seen] = torch.where(picked > 0, picked / params.repeat_penalty, picked * params.repeat_penalty)
        if params.temperature <= 0:
            return int(logits.argmax())
        logits = logits.float() / params.temperature
        if params.top_k > 0:
            kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, -1)
        if params.top_p < 1:
            ordered, order = probs.sort(descending=True)
            drop = ordered.cumsum(-1) - ordered > params.top_p  # keep the smallest set reaching top_p
            probs = probs.scatter(0, order, ordered.masked_fill(drop, 0.0))
        return int(torch.multinomial(probs.cpu(), 1, generator=generator))

    def stream(self, conversation: Conversation, params: GenParams) -> Iterator[Chunk]:
        return self._generate(self.render(conversation), params, keep=True)

    def complete(self, prompt: str, params: GenParams, echo: bool = False) -> Iterator[Chunk]:
        """Continue raw text (tokenized as plain text); `echo` first sends the prompt's tokens' logprobs."""
        return self._generate(Prompt((), (Segment(prompt, False),)), params, keep=False, echo=echo)

    def _generate(self, prompt: Prompt, params: GenParams, keep: bool, echo: bool = False) -> Iterator[Chunk]:
        torch = self._torch
        with self._lock, torch.inference_mode():
            usage, tokens, n_prefix, cache, n_cached = self._prepare(prompt, reuse_history=keep)
            generator = torch.Generator()
            if params.seed is not None and params.seed >= 0:
                generator.manual_seed(params.seed)
            else:
                generator.seed()
            grammar = self._grammar(params.schema) if params.schema is not None else None
            stops, out_ids, sent = StopBuffer(params.stop), list[int](), ""
            finish = "length"
            seen = tokens[n_prefix:]  # the request's own messages, for DRY
            all_logits = self._forward(tokens[n_cached:], cache).logits[0]
            if echo:
                yield Chunk("", prompt_logprobs=self._prompt_logprobs(tokens, all_logits, params.logprobs or 0))
            logits = all_logits[-1]
            try:
                for _ in range(params.max_tokens):
                    token = self._choose(logits, params, generator, grammar, out_ids, seen)
                    if token in self._eog:
                        finish = "stop"
                        break
                    out_ids.append(token)
                    usage.completion_tokens += 1
                    logprobs = None if params.logprobs is None else [self._logprob(logits, token, params.logprobs)]
                    text = self.tokenizer.decode(out_ids, skip_special_tokens=False)
                    if not text.endswith("\ufffd"):  # hold back a partial UTF-8 character
                        piece, sent = stops.push(text[len(sent) :]), text
                        if piece or logprobs:
                            yield Chunk(piece, logprobs=logprobs)
                    elif logprobs:
                        yield Chunk("", logprobs=logprobs)
                    if stops.stopped:
                        finish = "stop"
                        break
                    if len(tokens) + len(out_ids) >= self._n_ctx:
                        break
                    logits = self._forward([token], cache).logits[0, -1]
            finally:
                if keep:
                    self._save_turn(tokens, out_ids, cache)
            tail = ""
            if not stops.stopped:
                text = self.tokenizer.decode(out_ids, skip_special_tokens=False)
                tail = stops.push(text[len(sent) :]) + stops.flush()
            yield Chunk(tail, finish, usage)  # type: ignore[arg-type]

    def _grammar(self, schema: Any) -> Any:
        """An llguidance matcher of the JSON schema over this tokenizer (`pip install llguidance`)."""
        try:
            import llguidance
            import llguidance.hf
        except ImportError as e:
            raise EngineError("output schemas on the transformers engine need: pip install llguidance") from e
        if self._llg_tokenizer is None:
            self._llg_tokenizer = llguidance.hf.from_tokenizer(self.tokenizer, eos_token=sorted(self._eog))
        compact: Any = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}  # as llama.cpp
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=compact)
        matcher = llguidance.LLMatcher(self._llg_tokenizer, grammar)
        if matcher.is_error():
            raise EngineError(f"the output schema could not be compiled: {matcher.get_error()}")
        return matcher

    def _choose(
        self, logits: Any, params: GenParams, generator: Any, grammar: Any, reply: list[int], seen: list[int]
    ) -> int:
        """A sampled token; with a grammar it checks only that token, and masks the vocabulary only when the
        grammar refuses it (as the llama.cpp engine does)."""
        token = self._sample(logits, params, generator, reply, seen)
        if grammar is None:
            return token
        if grammar.validate_tokens([token]) != 1:
            import llguidance.numpy

            mask = llguidance.numpy.allocate_token_bitmask(1, logits.shape[-1])
            llguidance.numpy.fill_next_token_bitmask(grammar, mask)
            allowed = self._torch.from_numpy(((mask[0, :, None] >> self._torch.arange(32).numpy()) & 1).reshape(-1))
            logits = logits.masked_fill(allowed[: logits.shape[-1]].to(logits.device) == 0, float("-inf"))
            token = self._sample(logits, params, generator, reply, seen)
        grammar.consume_token(token)
        return token

    def _logprob(self, logits: Any, token: int, top: int) -> TokenLogprob:
        lp = self._torch.log_softmax(logits.double(), -1)
        best = self._torch.topk(lp, top).indices.tolist() if top else []
        piece = self.tokenizer.decode([token])
        return TokenLogprob(piece, float(lp[token]), tuple((self.tokenizer.decode([t]), float(lp[t])) for t in best))

    def _prompt_logprobs(self, tokens: list[int], logits: Any, top: int) -> list[TokenLogprob]:
        """Each prompt token's logprob after the ones before it (the first has none)."""
        out = [TokenLogprob(self.tokenizer.decode([tokens[0]]), None)]
        return out + [self._logprob(logits[i], tokens[i + 1], top) for i in range(len(tokens) - 1)]

    def _save_turn(self, prompt_tokens: list[int], reply: list[int], cache: Any) -> None:
        """Save where the next chat turn starts: prompt plus reply when the reply re-tokenizes to the same
        tokens (the next prompt then extends them), else the prompt alone."""
        held = (prompt_tokens + reply)[: cache.get_seq_length()]  # a last sampled token may not be evaluated
        text = self.tokenizer.decode(reply, skip_special_tokens=False)
        if self._tokenize(text, special=False) != reply:
            held = prompt_tokens
        _crop(cache, len(held))
        self._save(held, cache, pinned=False)

    def close(self) -> None:
        with self._lock:
            self._saved = []
