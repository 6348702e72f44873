"""Domain errors. Each becomes a CLI message (exit 2) or an HTTP status in exactly one place."""

from __future__ import annotations


class AllInOneError(Exception):
    """Base of every error a user can cause or fix."""


class ModelError(AllInOneError):
    """The model reference cannot be resolved, assembled or loaded."""


class TaskNotFound(AllInOneError):
    """No task with that name."""


class TaskDefinitionError(AllInOneError):
    """A task YAML file is invalid."""


class InvalidInput(AllInOneError):
    """The request text or options are unusable (empty text, bad option)."""


class EngineError(AllInOneError):
    """The inference backend failed on a request (context full, decode error)."""


class Unsupported(InvalidInput):
    """The request asks for something this server or engine does not do (a field, a schema keyword)."""


class ContextOverflow(InvalidInput):
    """The prompt does not fit in the model's context window."""


class InputTooLong(InvalidInput):
    """The input is longer than the task accepts, and the task's policy is to refuse rather than cut it."""

    message_zh = "输入过长"


class EmptyText(InvalidInput):
    """The text is empty or only whitespace."""

    message_zh = "请输入文本"

    def __init__(self) -> None:
        super().__init__("empty text: please enter some text / 请输入文本")


class SessionNotFound(AllInOneError):
    """No chat session with that id."""


class SessionStoreError(AllInOneError):
    """The session store cannot be opened, is not a session database, or failed (a full disk)."""

    message_zh = "会话存储出错，本轮对话未保存"


class SessionLimit(AllInOneError):
    """A session holds the most turns allowed, or an API key the most sessions."""

    message_zh = "会话数量或轮数已达上限"


class OutputInvalid(EngineError):
    """The model's output does not parse as the JSON the task's output_schema declares."""
