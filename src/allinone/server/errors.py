"""The one place where errors become HTTP statuses and the stable JSON error body."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import (
    AllInOneError,
    ContextOverflow,
    EngineError,
    InputTooLong,
    InvalidInput,
    ModelError,
    OutputInvalid,
    SessionLimit,
    SessionNotFound,
    SessionStoreError,
    TaskDefinitionError,
    TaskNotFound,
    Unsupported,
)
from ..logs import log_path
from .admission import ClientGone, ModelLoading, QueueFull, RequestTimeout

log = logging.getLogger("allinone.server")
MESSAGE_CHARS = 1000  # characters of any string in an error body: a message may repeat a 1 MB value

# (class, status, type); the first match wins, so subclasses come before their bases
_DOMAIN: list[tuple[type[AllInOneError], int, str]] = [
    (QueueFull, 429, "queue_full"),
    (ModelLoading, 503, "model_loading"),
    (RequestTimeout, 504, "timeout"),
    (ClientGone, 499, "client_gone"),
    (ContextOverflow, 413, "context_overflow"),
    (InputTooLong, 413, "input_too_long"),
    (Unsupported, 400, "unsupported"),
    (InvalidInput, 400, "invalid_input"),
    (TaskNotFound, 404, "task_not_found"),
    (SessionNotFound, 404, "session_not_found"),
    (SessionLimit, 409, "session_limit"),
    (SessionStoreError, 503, "session_store_error"),
    (ModelError, 503, "model_unavailable"),
    (OutputInvalid, 502, "output_invalid"),
    (EngineError, 503, "engine_error"),
    (TaskDefinitionError, 500, "task_definition_error"),
    (AllInOneError, 400, "error"),
]

_HTTP_TYPES = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    422: "validation_error",
}

_ZH = {
    "context_overflow": "输入过长，超出模型上下文",
    "input_too_long": "输入过长",
    "unsupported": "不支持该请求字段或功能",
    "task_not_found": "未知任务",
    "session_not_found": "未知会话",
    "model_unavailable": "模型不可用",
    "engine_error": "推理引擎出错，请稍后重试",
    "output_invalid": "模型输出不是有效的 JSON",
    "unauthorized": "缺少或无效的 API 密钥",
    "not_found": "未找到",
    "method_not_allowed": "不支持该请求方法",
    "request_too_large": "请求体过大",
    "validation_error": "请求格式或字段无效",
    "invalid_host": "本服务不接受该 Host 请求头",
    "internal_error": "服务器内部错误",
}


def _text(value: Any) -> Any:
    """`value` with every string sendable: lone surrogates (JSON lets clients send them) as '?', long ones cut."""
    if isinstance(value, str):
        value = value if len(value) <= MESSAGE_CHARS else value[:MESSAGE_CHARS] + "…"
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_text(v) for v in value]
    return value


def error_body(type_: str, message: str, message_zh: str | None = None, **extra: Any) -> dict[str, Any]:
    """The stable error shape: {"error": {"type", "message", "message_zh"?, ...}}; messages may repeat what a
    client sent, so every string in it is made sendable."""
    error: dict[str, Any] = {"type": type_, "message": message}
    zh = message_zh or _ZH.get(type_)
    if zh:
        error["message_zh"] = zh
    return {"error": _text({**error, **extra})}


def domain_error(exc: AllInOneError) -> tuple[int, dict[str, Any]]:
    """HTTP status and body of a domain error."""
    status, type_ = next((s, t) for cls, s, t in _DOMAIN if isinstance(exc, cls))
    return status, error_body(type_, str(exc), getattr(exc, "message_zh", None))


def unauthorized() -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, body and headers of a request without a valid API key."""
    body = error_body("unauthorized", "missing or invalid API key: send `Authorization: Bearer <key>`")
    return 401, body, {"WWW-Authenticate": "Bearer"}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _json(status: int, body: dict[str, Any], request: Request) -> JSONResponse:
    record = getattr(request.state, "record", None)
    if record is not None:
        record.error = body["error"]["type"]
    return JSONResponse(body, status_code=status)


async def _on_domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AllInOneError)
    status, body = domain_error(exc)
    response = _json(status, body, request)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
    body = error_body("validation_error", _validation_message(exc), details=details)
    return _json(422, body, request)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    type_ = _HTTP_TYPES.get(exc.status_code, "http_error")
    response = _json(exc.status_code, error_body(type_, str(exc.detail)), request)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, log_path(request.url.path), exc_info=exc)
    return _json(500, error_body("internal_error", "internal server error"), request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(AllInOneError, _on_domain)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
