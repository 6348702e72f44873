"""HTTP request and response bodies: validated at the edge, with the examples shown at /docs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from ..engines.base import GENERATION_OPTIONS, Message


def _scrub(text: str) -> str:
    """JSON may carry lone surrogates (\\ud800), which are not text: they become '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")


Text = Annotated[str, AfterValidator(_scrub)]
SessionId = Annotated[
    str,
    Field(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$", description="Chat session id; kept by the server."
    ),
]
Stop = Annotated[str, AfterValidator(_scrub), Field(min_length=1, max_length=64)]


def _examples(*examples: dict[str, Any]) -> dict[str, Any]:
    return {"examples": list(examples)}


# --- shared pieces ------------------------------------------------------------------------------


class Options(BaseModel):
    """Generation overrides; unset ones keep the task's defaults."""

    max_tokens: int | None = Field(None, ge=1, le=8192, description="Most tokens to generate.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="0 is greedy.")
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=1000)
    stop: Stop | list[Stop] | None = Field(None, description="Stop strings (at most 4).")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Sampling seed for reproducible replies.")
    repeat_penalty: float | None = Field(
        None, ge=1.0, le=2.0, description="Penalty on tokens already in the reply; 1 is off."
    )
    dry_multiplier: float | None = Field(
        None, ge=0.0, le=5.0, description="DRY penalty on repeating runs of the message or the reply; 0 is off."
    )

    @model_validator(mode="after")
    def _at_most_four_stops(self) -> Options:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("at most 4 stop strings")
        return self

    def options(self) -> dict[str, Any]:
        """The overrides that were given, as TaskService options."""
        keys = [k for k in GENERATION_OPTIONS if k in type(self).model_fields]
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: Text = Field(max_length=100_000)

    def message(self) -> Message:
        return Message(self.role, self.content)


class UsageOut(BaseModel):
    prompt_tokens: int = Field(description="Tokens of the prompt, cached ones included.")
    cached_tokens: int = Field(description="Prompt tokens served from the KV cache, not recomputed.")
    completion_tokens: int = Field(description="Tokens generated.")


TRUNCATED = "The input was longer than the task accepts and was cut (head and tail kept)."
TRIMMED = "Oldest conversation turns left out so that the prompt fits the context window."


class Timing(BaseModel):
    total_ms: float = Field(description="Time spent serving the request, ms.")
    first_token_ms: float | None = Field(None, description="Generate tasks: time to the first reply token, ms.")
    sentiment_ms: float | None = Field(None, description="Combined flow: time to the sentiment result, ms.")


class ErrorDetail(BaseModel):
    type: str = Field(description="Stable machine-readable kind, e.g. invalid_input, task_not_found.")
    message: str
    message_zh: str | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail

    model_config = ConfigDict(
        json_schema_extra=_examples(
            {
                "error": {
                    "type": "invalid_input",
                    "message": "empty text: please enter some text / 请输入文本",
                    "message_zh": "请输入文本",
                }
            }
        )
    )


# --- /v1/tasks/{name} ---------------------------------------------------------------------------


class TaskRequest(Options):
    """One request to any task (or `auto`: the model picks the task): `text`, or `messages` for a chat-like
    (generate) task. Other fields are the task's own options (e.g. a summary's `length`); a task rejects
    ones it does not have."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra=_examples(
            {"text": "这家酒店服务太差了，再也不来了"},
            {"text": "今天工作好累", "session_id": "demo-1", "max_tokens": 64, "temperature": 0.7},
            {"messages": [{"role": "user", "content": "用一句话介绍你自己"}], "max_tokens": 48},
            {"text": "会议纪要：……（一段长文本）", "length": "short"},
        ),
    )

    text: Text | None = Field(None, description="The input text.")
    messages: list[ChatMessage] | None = Field(
        None, min_length=1, max_length=200, description="A whole conversation instead of `text`; ends with a user turn."
    )
    session_id: SessionId | None = Field(None, description="Multi-turn generate tasks: continue this session.")
    stream: bool = Field(False, description="Send server-sent events: `token` events, then `done`.")

    def options(self) -> dict[str, Any]:
        return {**(self.model_extra or {}), **super().options()}

    @model_validator(mode="after")
    def _text_or_messages(self) -> TaskRequest:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give exactly one of `text` or `messages`")
        if self.messages is not None and self.session_id is not None:
            raise ValueError("`messages` carries its own history; `session_id` applies to `text` only")
        return self


class PickOut(BaseModel):
    task: str = Field(description="The task the model picked.")
    probability: float
    probabilities: dict[str, float] = Field(description="Every routable task.")


class ClassifyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=_examples(
            {
                "task": "sentiment",
                "kind": "classify",
                "label": "negative",
                "display": "😡 LLM 情感判断: 负面",
                "probabilities": {"positive": 0.03, "negative": 0.97},
                "truncated": False,
                "usage": {"prompt_tokens": 80, "cached_tokens": 66, "completion_tokens": 0},
                "timing": {"total_ms": 95.2},
            }
        )
    )

    task: str
    kind: Literal["classify"] = "classify"
    label: str = Field(description="One of the task's label ids.")
    display: str = Field(description="The line shown to people.")
    probabilities: dict[str, float] = Field(description="Probability of every label, in declared order.")
    truncated: bool = Field(description=TRUNCATED)
    scoring: Literal["exact", "first_token", "choice"] = Field(
        "exact",
        description="How labels were scored: `exact` log-probabilities (local engines), `first_token` (a remote "
        "server's top logprobs) or `choice` (the server has no logprobs: the model chose a label, probabilities 1/0).",
    )
    route: PickOut | None = Field(None, description="Task `auto`: the task the model picked for the text.")
    usage: UsageOut
    timing: Timing


class GenerateResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=_examples(
            {
                "task": "chat",
                "kind": "generate",
                "text": "辛苦了！先好好休息一下吧。",
                "finish_reason": "stop",
                "session_id": "demo-1",
                "usage": {"prompt_tokens": 190, "cached_tokens": 170, "completion_tokens": 12},
                "timing": {"total_ms": 640.0, "first_token_ms": 180.0},
            }
        )
    )

    task: str
    kind: Literal["generate"] = "generate"
    text: str
    finish_reason: Literal["stop", "length"] | None
    session_id: str | None = Field(None, description="The session the turn was added to (multi-turn tasks).")
    data: Any = Field(None, description="Tasks with an output_schema: the reply parsed as JSON.")
    route: PickOut | None = Field(None, description="Task `auto`: the task the model picked for the text.")
    truncated: bool = Field(False, description=TRUNCATED)
    trimmed_turns: int = Field(0, description=TRIMMED)
    usage: UsageOut
    timing: Timing


TaskResponse = Annotated[ClassifyResponse | GenerateResponse, Field(discriminator="kind")]


# --- the original service's routes --------------------------------------------------------------


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra=_examples({"text": "这家酒店服务太差了，再也不来了"}))

    text: Text = Field(description="The text whose sentiment is wanted.")


class AnalyzeResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=_examples(
            {
                "sentiment": "负面",
                "label": "negative",
                "display": "😡 LLM 情感判断: 负面",
                "probabilities": {"positive": 0.03, "negative": 0.97},
                "usage": {"prompt_tokens": 80, "cached_tokens": 66, "completion_tokens": 0},
                "timing": {"total_ms": 95.2},
            }
        )
    )

    sentiment: str = Field(description="正面 or 负面, as the original service returned.")
    label: str = Field(description="positive or negative.")
    display: str
    probabilities: dict[str, float]
    truncated: bool = Field(False, description=TRUNCATED)
    usage: UsageOut
    timing: Timing


class ChatRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra=_examples({"text": "你好，今天有点累", "session_id": "demo-1"}))

    text: Text
    session_id: SessionId | None = Field(None, description="Continue this conversation; a new one when omitted.")


class ChatResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=_examples(
            {
                "reply": "辛苦啦！要不要先休息一下？",
                "session_id": "demo-1",
                "usage": {"prompt_tokens": 150, "cached_tokens": 140, "completion_tokens": 11},
                "timing": {"total_ms": 520.0, "first_token_ms": 120.0},
            }
        )
    )

    reply: str
    session_id: str
    truncated: bool = Field(False, description=TRUNCATED)
    trimmed_turns: int = Field(0, description=TRIMMED)
    usage: UsageOut
    timing: Timing


# --- the combined flow --------------------------------------------------------------------------


class AnalyzeAndReplyRequest(Options):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=_examples(
            {"text": "今天工作好累，老板还批评了我", "session_id": "demo-1", "stream": True},
            {"text": "I finally finished my first marathon!", "max_tokens": 64},
        ),
    )

    text: Text
    session_id: SessionId | None = Field(None, description="Continue this conversation; a new one when omitted.")
    stream: bool = Field(False, description="Server-sent events: `sentiment`, then `token`s, then `done`.")


class Sentiment(BaseModel):
    sentiment: str = Field(description="正面 or 负面.")
    label: str
    display: str
    probabilities: dict[str, float]
    truncated: bool = Field(False, description=TRUNCATED)
    usage: UsageOut


class AnalyzeAndReplyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=_examples(
            {
                "sentiment": {
                    "sentiment": "负面",
                    "label": "negative",
                    "display": "😡 LLM 情感判断: 负面",
                    "probabilities": {"positive": 0.1, "negative": 0.9},
                    "usage": {"prompt_tokens": 82, "cached_tokens": 66, "completion_tokens": 0},
                },
                "reply": "被批评确实让人难受，辛苦你了……",
                "finish_reason": "stop",
                "session_id": "demo-1",
                "usage": {"prompt_tokens": 260, "cached_tokens": 230, "completion_tokens": 40},
                "timing": {"total_ms": 1500.0, "first_token_ms": 260.0, "sentiment_ms": 90.0},
            }
        )
    )

    sentiment: Sentiment
    reply: str
    finish_reason: Literal["stop", "length"] | None
    session_id: str
    trimmed_turns: int = Field(0, description=TRIMMED)
    usage: UsageOut = Field(description="Sentiment and reply together.")
    timing: Timing


# --- sessions, health, models -------------------------------------------------------------------


class TurnOut(BaseModel):
    role: Literal["user", "assistant"]
    content: str
    sentiment: str | None = None


class SessionOut(BaseModel):
    session_id: str
    turns: list[TurnOut]


class TaskInfo(BaseModel):
    name: str
    kind: Literal["classify", "generate"]
    description: str
    model_id: str = Field(description="Its id on the OpenAI-compatible API.")
    labels: list[str] | None = None


class HealthOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=_examples(
            {"status": "ok", "ready": True, "model": "qwen2.5-coder-0.5b-instruct-q4_k_m", "backend": "llama.cpp"}
        )
    )

    status: Literal["ok", "loading"]
    ready: bool = Field(description="True once the model is loaded.")
    model: str | None = None
    backend: str | None = None
    tasks: list[TaskInfo] = Field(default_factory=list)


# --- OpenAI-compatible --------------------------------------------------------------------------


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: Text | None = None


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[ContentPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    name: str = Field("output", max_length=64)
    description: Text | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


MAX_CHOICES = 8  # `n`: replies generated side by side (each needs one of the engine's reply slots)


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat completions request. Fields this server does not honor are refused (400), except those
    that change nothing here (`user`, `metadata`, `store`, `service_tier`; penalties of 0, empty `tools`...)."""

    model_config = ConfigDict(
        extra="allow",
        populate_by_name=True,
        json_schema_extra=_examples(
            {"model": "allinone-chat", "messages": [{"role": "user", "content": "你好"}], "max_tokens": 64},
            {"model": "allinone-sentiment", "messages": [{"role": "user", "content": "这家酒店服务太差了"}]},
            {"model": "allinone-chat", "messages": [{"role": "user", "content": "讲个笑话"}], "stream": True},
        ),
    )

    model: str = Field(description="`allinone-<task>` or the bare task name; see GET /v1/models.")
    messages: list[OpenAIMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: Stop | list[Stop] | None = None
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="Replies generated side by side (generate models).")
    response_format: ResponseFormat | None = Field(
        None, description="`json_object` or `json_schema` (with `strict`): the reply is constrained to it."
    )
    logprobs: bool = Field(False, description="Each reply token's log-probability (classify models: the labels').")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Alternatives per token, with `logprobs`.")

    def options(self) -> dict[str, Any]:
        opts = {
            "max_tokens": self.max_completion_tokens or self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": self.stop,
            "seed": self.seed,
        }
        return {k: v for k, v in opts.items() if v is not None}


class CompletionRequest(BaseModel):
    """The OpenAI (legacy) completions request: raw text continued by the loaded model, no chat template."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra=_examples(
            {"model": "allinone", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0},
            {"model": "allinone", "prompt": "北京是中国的首都。", "max_tokens": 1, "echo": True, "logprobs": 1},
        ),
    )

    model: str = Field(description="Any id of GET /v1/models, or `allinone`: the one loaded model.")
    prompt: Text | list[Text] = Field(description="The text to continue, or several (one choice each).")
    max_tokens: int = Field(16, ge=0, le=8192, description="0 with `echo`: only the prompt's logprobs.")
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: Stop | list[Stop] | None = None
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    n: int = Field(1, ge=1, le=1, description="One choice per prompt.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(
        None, ge=0, le=20, description="Log-probabilities of the tokens and this many alternatives."
    )
    echo: bool = Field(False, description="Return the prompt before the completion (with its logprobs).")

    @model_validator(mode="after")
    def _bounded(self) -> CompletionRequest:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if not 1 <= len(prompts) <= 64:
            raise ValueError("1 to 64 prompts")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("at most 4 stop strings")
        return self


class ClassificationOut(BaseModel):
    label: str
    display: str
    probabilities: dict[str, float]
    scoring: str = Field("exact", description="How labels were scored: exact, first_token or choice.")


class CompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None
    refusal: None = None


class Choice(BaseModel):
    index: int = 0
    message: CompletionMessage
    finish_reason: Literal["stop", "length"] | None
    logprobs: ChoiceLogprobs | None = None


class PromptTokensDetails(BaseModel):
    cached_tokens: int


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class ChatCompletion(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=_examples(
            {
                "id": "chatcmpl-0f3c",
                "object": "chat.completion",
                "created": 1767225600,
                "model": "allinone-sentiment",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "😡 LLM 情感判断: 负面"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 80,
                    "completion_tokens": 0,
                    "total_tokens": 80,
                    "prompt_tokens_details": {"cached_tokens": 66},
                },
                "classification": {
                    "label": "negative",
                    "display": "😡 LLM 情感判断: 负面",
                    "probabilities": {"positive": 0.03, "negative": 0.97},
                },
            }
        )
    )

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    classification: ClassificationOut | None = Field(None, description="Classify tasks: label and probabilities.")
    data: Any = Field(None, description="Tasks with an output_schema: the reply parsed as JSON.")
    route: PickOut | None = Field(None, description="Model `allinone-auto`: the task the model picked.")
    truncated: bool = Field(False, description=TRUNCATED)
    trimmed_turns: int = Field(0, description=TRIMMED)
    timing: Timing | None = None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "allinone"
    task: str
    kind: Literal["classify", "generate", "auto"]
    description: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
