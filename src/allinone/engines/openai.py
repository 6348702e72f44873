"""Thin client of any OpenAI-compatible server (vLLM, llama.cpp's server, SGLang, Ollama, OpenAI itself)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import EngineError, ModelError, Unsupported
from . import dry
from .base import Chunk, Conversation, Engine, EngineInfo, GenParams, Scores, Slots, TokenLogprob, Usage
from .stops import StopBuffer

log = logging.getLogger("allinone.engine")
DEFAULT_CONCURRENCY = 4  # requests sent at once when the server does not say how many it runs
_TOP_LOGPROBS = 20  # the most OpenAI's API returns
_UNCHOSEN = -1e9  # the log-score of a label the model did not choose (finite: softmax stays defined)
_CHOICE_TOKENS = 16


def _gbnf_choice(words: Sequence[str]) -> str:
    return "root ::= " + " | ".join(json.dumps(w, ensure_ascii=False) for w in words)


class OpenAIEngine(Engine):
    """The task layer on top of a remote OpenAI-compatible chat endpoint.

    The server applies its own chat template and caches prompt prefixes itself. Scoring reads the first
    token's `top_logprobs` of a one-token chat completion, so a continuation scores its first token
    (`Scores.scoring = "first_token"`); a server without logprobs gets a constrained choice instead
    (`"choice"`: the chosen label scores 0, the others far below).

    Concurrency: up to `concurrency` requests at once (`slots`); 0 asks the server (llama.cpp's server says how
    many slots it has in /props), else DEFAULT_CONCURRENCY. The context size comes from the server too (vLLM's
    `max_model_len`, llama.cpp's `n_ctx`), else `n_ctx`: chat history is trimmed to fit it.

    A reply cannot be started for the model (`continues_reply`): servers differ in whether and how they continue
    a last assistant message, so a chat task's `reply_start` is left out here.
    """

    continues_reply = False

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "",
        api_key: str = "",
        timeout: float | None = 300,
        concurrency: int = 0,
        n_ctx: int = 4096,
    ) -> None:
        try:
            import httpx
        except ImportError as e:
            raise ModelError("the openai engine needs httpx: pip install 'qwen-allinone[openai]'") from e
        self._httpx = httpx
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, limits=limits)
        try:
            r = self._client.get("/models")
            cards = (r.json().get("data") if r.status_code == 200 else None) or []
        except (httpx.HTTPError, ValueError, AttributeError) as e:
            raise ModelError(f"the OpenAI-compatible server at {self.base_url} is unreachable: {e}") from None
        if not cards and not model:
            raise ModelError(f"{self.base_url}/models lists no model; set ALLINONE_OPENAI_MODEL")
        self.model = model or str(cards[0]["id"])
        card = next((c for c in cards if c.get("id") == self.model), cards[0] if cards else {})
        props = self._props()
        size = card.get("max_model_len") or (card.get("meta") or {}).get("n_ctx")
        size = size or (props.get("default_generation_settings") or {}).get("n_ctx") or n_ctx
        slots = concurrency or int(props.get("total_slots") or DEFAULT_CONCURRENCY)
        self.slots = Slots(generate=slots, score=slots)
        self._dry = "default_generation_settings" in props  # llama.cpp's server, which takes dry_multiplier
        self._logprobs: bool | None = None  # None: not yet known whether the server returns logprobs
        self._schema_form = 0  # which response_format form the server takes (see _constrained)
        self._lock = threading.Lock()
        self.info = EngineInfo("openai", self.model, int(size), {"base_url": self.base_url, "concurrency": slots})

    # --- HTTP -------------------------------------------------------------------------------------

    def _send(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, stream: bool = False, retries: int = 2
    ) -> Any:
        """Send a request, again (up to `retries` times) when the server closed the connection without answering.
        Servers close a pooled connection left idle (uvicorn and llama.cpp's server after 5 s, httpx's own expiry),
        and a request that goes out on it as it closes is never answered (httpx issue 2983); llama.cpp's server
        also closes some connections after a streamed reply, unannounced. Nothing was answered, so the request is
        sent again on another connection, as the openai SDK does."""
        try:
            return self._client.send(self._client.build_request(method, path, json=body), stream=stream)
        except self._httpx.RemoteProtocolError as e:
            if not retries or "without sending a response" not in str(e):
                raise
            log.debug("model server %s%s closed the connection unanswered; sending again", self.base_url, path)
        return self._send(method, path, body, stream=stream, retries=retries - 1)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            r = self._send(method, path, body)
        except self._httpx.HTTPError as e:
            raise self._failed(path, f"unreachable: {e}") from None
        if r.status_code >= 400:
            raise self._failed(path, f"answered {r.status_code}: {r.text[:300]}", r.status_code)
        return r.json()

    def _failed(self, path: str, detail: str, status: int | None = None) -> EngineError:
        """The upstream failure in full for the operator's log; the client learns only that the model server
        failed (no URL, no upstream body)."""
        log.warning("model server %s%s %s", self.base_url, path, detail)
        return EngineError(f"the model server failed{f' (status {status})' if status else ''}")

    def _props(self) -> dict[str, Any]:
        """llama.cpp's server properties (slots, context size); {} from servers that have none."""
        root = self.base_url.removesuffix("/v1")
        try:
            r = self._client.get(f"{root}/props")
            props = r.json() if r.status_code == 200 else {}
        except (self._httpx.HTTPError, ValueError):
            return {}
        return props if isinstance(props, dict) else {}

    def _chat(self, messages: list[dict[str, str]], **fields: Any) -> Any:
        return self._request("POST", "/chat/completions", {"model": self.model, "messages": messages, **fields})

    # --- prompts ----------------------------------------------------------------------------------

    @staticmethod
    def messages_of(conversation: Conversation) -> list[dict[str, str]]:
        """The chat messages sent: the server renders its own template and caches prompt prefixes itself."""
        return [{"role": m.role, "content": m.content} for m in conversation.messages]

    def count_tokens(self, text: str) -> int:
        """An estimate (the tokenizer lives on the server): one token per CJK character, else per 4 characters."""
        wide = sum(1 for ch in text if ord(ch) > 0x2E7F)
        return wide + math.ceil((len(text) - wide) / 4)

    # --- scoring ----------------------------------------------------------------------------------

    def score(self, conversation: Conversation, continuations: Sequence[str], hidden: bool = False) -> Scores:
        if hidden:
            raise EngineError("the openai engine has no hidden states: learned heads need a local engine")
        messages = self.messages_of(conversation)
        if self._logprobs is not False:
            try:
                reply = self._chat(messages, max_tokens=1, temperature=0, logprobs=True, top_logprobs=_TOP_LOGPROBS)
                content = ((reply["choices"][0].get("logprobs") or {}).get("content")) or []
            except EngineError:
                if self._logprobs:  # it worked before: a real failure
                    raise
                content = []
            with self._lock:
                self._logprobs = bool(content) or bool(self._logprobs)
            if content:
                top = {t["token"]: float(t["logprob"]) for t in content[0].get("top_logprobs") or []}
                top.setdefault(content[0]["token"], float(content[0]["logprob"]))
                logprobs = [self._first_token(top, c) for c in continuations]
                return Scores(logprobs, self._usage(reply), None, "first_token")
        return self._choice(messages, continuations)

    @staticmethod
    def _first_token(top: dict[str, float], text: str) -> float:
        """The log-probability of the longest listed token that starts `text`; else at most the least listed one."""
        starts = [tok for tok in top if tok and text.startswith(tok)]
        if starts:
            return top[max(starts, key=len)]
        return min(top.values())

    def _choice(self, messages: list[dict[str, str]], continuations: Sequence[str]) -> Scores:
        """Greedy reply constrained to the continuations (llama.cpp servers: `grammar`; vLLM: `guided_choice`)."""
        words = list(dict.fromkeys(continuations))
        fields = {"max_tokens": _CHOICE_TOKENS, "temperature": 0}
        try:
            reply = self._chat(messages, **fields, grammar=_gbnf_choice(words), guided_choice=words)
        except EngineError:  # a server that refuses unknown fields
            reply = self._chat(messages, **fields)
        text = (reply["choices"][0]["message"].get("content") or "").strip()
        chosen = max((w for w in words if text.startswith(w)), key=len, default=None)
        scores = [0.0 if chosen is None or c == chosen else _UNCHOSEN for c in continuations]
        return Scores(scores, self._usage(reply), None, "choice")

    @staticmethod
    def _usage(reply: dict[str, Any]) -> Usage:
        u = reply.get("usage") or {}
        cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        return Usage(u.get("prompt_tokens") or 0, cached, u.get("completion_tokens") or 0)

    # --- generation -------------------------------------------------------------------------------

    def stream(self, conversation: Conversation, params: GenParams) -> Iterator[Chunk]:
        """Pass the server's stream through (stop strings also applied here, past the API's four)."""
        if conversation.reply_start:
            raise Unsupported("the openai engine cannot continue a started reply (reply_start)")
        body = {"messages": self.messages_of(conversation), **self._sampling(params)}
        if params.logprobs is not None:
            body |= {"logprobs": True, "top_logprobs": params.logprobs}
        if params.schema is None:
            return self._relay("/chat/completions", body, params)
        return self._constrained(body, dict(params.schema), params)

    def _constrained(self, body: dict[str, Any], schema: dict[str, Any], params: GenParams) -> Iterator[Chunk]:
        """A reply under a JSON schema, in the form the server takes: OpenAI's `json_schema` (vLLM, llama.cpp's
        server), else llama-cpp-python's `json_object` with a `schema`; the form that worked is remembered."""
        forms = [
            {"type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}},
            {"type": "json_object", "schema": schema},
        ]
        for form in forms[self._schema_form :]:
            try:
                first = True
                for chunk in self._relay("/chat/completions", {**body, "response_format": form}, params):
                    first = False
                    yield chunk
                return
            except EngineError:
                if not first or form is forms[-1]:
                    raise
                self._schema_form += 1  # refused before any output: try the next form

    def complete(self, prompt: str, params: GenParams, echo: bool = False) -> Iterator[Chunk]:
        """The server's /completions. With echo, one request without streaming: the prompt's tokens are those
        whose offsets fall inside it."""
        body = {"prompt": prompt, **self._sampling(params)}
        if params.logprobs is not None:
            body["logprobs"] = params.logprobs
        if not echo:
            return self._relay("/completions", body, params)
        return self._echoed(prompt, body)

    def _sampling(self, params: GenParams) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_tokens, "temperature": params.temperature}
        body["top_p"] = params.top_p
        if params.stop:
            body["stop"] = list(params.stop[:4])
        if params.seed is not None and params.seed >= 0:
            body["seed"] = params.seed
        if params.repeat_penalty != 1.0:
            body["repeat_penalty"] = body["repetition_penalty"] = params.repeat_penalty  # llama.cpp / vLLM names
        if params.dry_multiplier > 0 and self._dry:  # llama.cpp's server has DRY; other servers do not
            body |= dry.server_fields(params.dry_multiplier)
        return body

    def _relay(self, path: str, body: dict[str, Any], params: GenParams) -> Iterator[Chunk]:
        stops, usage, finish, n_chunks = StopBuffer(params.stop), None, "stop", 0
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        try:
            with contextlib.closing(self._send("POST", path, body, stream=True)) as r:
                if r.status_code >= 400:
                    r.read()
                    raise self._failed(path, f"answered {r.status_code}: {r.text[:300]}", r.status_code)
                for event in self._events(r.iter_lines()):
                    usage = self._usage(event) if event.get("usage") else usage
                    for choice in event.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
                        n_chunks += bool(text)
                        finish = choice.get("finish_reason") or finish
                        logprobs = self._token_logprobs(choice.get("logprobs")) if params.logprobs is not None else None
                        piece = stops.push(text)
                        if piece or logprobs:
                            yield Chunk(piece, logprobs=logprobs)
                    if stops.stopped:
                        break
        except self._httpx.HTTPError as e:
            raise self._failed(path, f"failed mid-stream: {e}") from None
        usage = usage or Usage(completion_tokens=n_chunks)
        yield Chunk(stops.flush(), "length" if finish == "length" else "stop", usage)

    def _echoed(self, prompt: str, body: dict[str, Any]) -> Iterator[Chunk]:
        reply = self._request("POST", "/completions", {**body, "echo": True, "logprobs": body.get("logprobs") or 0})
        choice = reply["choices"][0]
        entries = self._token_logprobs(choice.get("logprobs")) or []
        offsets = (choice.get("logprobs") or {}).get("text_offset") or [0] * len(entries)
        n_prompt = sum(1 for o in offsets if o < len(prompt))
        text = choice.get("text") or ""
        yield Chunk("", prompt_logprobs=entries[:n_prompt])
        yield Chunk(text[len(prompt) :] if text.startswith(prompt) else text, logprobs=entries[n_prompt:])
        yield Chunk("", "length" if choice.get("finish_reason") == "length" else "stop", self._usage(reply))

    @staticmethod
    def _token_logprobs(data: Any) -> list[TokenLogprob] | None:
        """A choice's logprobs as TokenLogprobs: the chat shape (`content`) or the completions shape (`tokens`)."""
        if not isinstance(data, dict):
            return None
        if data.get("content") is not None:
            return [
                TokenLogprob(
                    e["token"],
                    e.get("logprob"),
                    tuple((t["token"], t["logprob"]) for t in e.get("top_logprobs") or []),
                    bytes(e.get("bytes") or []),
                )
                for e in data["content"]
            ]
        tops = data.get("top_logprobs") or [None] * len(data.get("tokens") or [])
        return [
            TokenLogprob(token, lp, tuple((top or {}).items()))
            for token, lp, top in zip(data.get("tokens") or [], data.get("token_logprobs") or [], tops, strict=False)
        ]

    @staticmethod
    def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
        """The JSON payloads of a server-sent event stream, up to `[DONE]`."""
        for line in lines:
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            event: dict[str, Any] = json.loads(data)
            yield event

    def close(self) -> None:
        self._client.close()
