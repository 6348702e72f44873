"""ASGI middleware: the Host check, API keys, the request-body limit, and the record, log line and metrics of
every request."""

from __future__ import annotations

import hmac
import json
import logging
import re
import uuid

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..logs import RequestLog, RequestRecord, log_path
from ..sessions import owner_of
from ..settings import Settings
from .errors import error_body, unauthorized
from .metrics import ServiceMetrics

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_QUIET = {"/", "/health", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/favicon.ico"}
_QUIET_UNDER = ("/static/", "/static-offline-docs/")  # the page's and the docs' files; all these logged at DEBUG
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def _too_large(limit: int) -> str:
    return f"request body larger than {limit} bytes"


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413: by Content-Length at once, else while reading."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, _too_large(self.limit))
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = json.dumps(error_body("request_too_large", _too_large(self.limit)), ensure_ascii=False).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, body: dict[str, object], headers: dict[str, str]) -> None:
    raw = json.dumps(body, ensure_ascii=False).encode()
    pairs = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
    pairs += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": pairs})
    await send({"type": "http.response.body", "body": raw})


def _host_name(header: bytes) -> str:
    """The name in a Host header, without its port: `[::1]:8000` -> `::1`, `Localhost.:80` -> `localhost`."""
    host = header.decode("latin-1").strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def allowed_hosts(settings: Settings) -> set[str] | None:
    """The Host names the server answers to; None: any (a bind reachable from elsewhere, no list given)."""
    named = {_host_name(h.encode()) for h in settings.allowed_hosts}
    if settings.loopback:  # a web page could make the browser resolve its own name to 127.0.0.1
        return {*LOOPBACK_NAMES, _host_name(settings.host.encode()), *named}
    return named or None


class HostCheck:
    """Refuse a request whose Host header names a host the server does not answer to, with 400."""

    def __init__(self, app: ASGIApp, hosts: set[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = dict(scope.get("headers", [])).get(b"host") if scope["type"] == "http" else None
        if self.hosts is None or header is None or _host_name(header) in self.hosts:
            await self.app(scope, receive, send)
            return
        body = error_body("invalid_host", f"this server does not answer to Host '{header.decode('latin-1')[:100]}'")
        record = scope.get("state", {}).get("record")
        if record is not None:
            record.error = body["error"]["type"]
        await _send_json(send, 400, body, {})


class ApiKeys:
    """Refuse requests without `Authorization: Bearer <key>` for one of `keys` with 401; the `open` paths (the
    page, its files, /health) need none. A request with a valid key carries its owner (the key's hash) in its
    state, for the sessions. No keys: every request passes."""

    def __init__(self, app: ASGIApp, keys: list[str], open_paths: set[str]) -> None:
        self.app = app
        self.owners = {k.encode(): owner_of(k) for k in keys if k}  # an empty key would let `Bearer ` in
        self.open = open_paths  # exact paths: a prefix would open whatever starts with it

    def _owner(self, scope: Scope) -> str | None:
        """The owner the request's key stands for; None without a valid key."""
        scheme, _, given = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        found = None
        for key, owner in self.owners.items():  # every key compared, in constant time each
            if hmac.compare_digest(given.strip(), key):
                found = owner
        return found if scheme.lower() == b"bearer" else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.owners:
            await self.app(scope, receive, send)
            return
        owner = self._owner(scope)
        if owner is not None or scope["path"] in self.open:
            if owner is not None:
                scope.setdefault("state", {})["owner"] = owner
            await self.app(scope, receive, send)
            return
        status, body, headers = unauthorized()
        record = scope.get("state", {}).get("record")
        if record is not None:
            record.error = body["error"]["type"]
        await _send_json(send, status, body, headers)


class Observe:
    """Gives each request a record (request id, timing, what the route filled in); when the response has
    ended, the last byte of a stream included, writes the log line and the metrics."""

    def __init__(self, app: ASGIApp, log: RequestLog, metrics: ServiceMetrics) -> None:
        self.app = app
        self.log = log
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        record = RequestRecord(
            given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16], scope["method"], log_path(scope["path"])
        )
        scope.setdefault("state", {})["record"] = record
        quiet = scope["path"] in _QUIET or scope["path"].startswith(_QUIET_UNDER)
        if not quiet:
            self.metrics.started()

        complete = False

        async def observed(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.start":
                record.status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", record.request_id.encode())]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                complete = True
            await send(message)

        try:
            await self.app(scope, receive, observed)
        except BaseException as e:
            if record.status in (0, 200):
                gone = isinstance(e, OSError | ClientDisconnect | anyio.get_cancelled_exc_class())
                record.status = 499 if gone else 500
            raise
        finally:
            if record.client_gone or (record.status and record.status < 400 and not complete):
                record.status = 499  # the client went away before the response ended
            self._finish(scope, record, quiet)

    def _finish(self, scope: Scope, record: RequestRecord, quiet: bool) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        task = record.task or ""
        self.metrics.finished(task, route, record.status, record.elapsed_ms() / 1000, record.usage, counted=not quiet)
        level = logging.ERROR if record.status >= 500 else logging.DEBUG if quiet else logging.INFO
        self.log.write(record, level, None if quiet else route)  # health, metrics, docs: no database row
