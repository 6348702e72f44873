"""Admission control: the model slot (one request at a time), a bounded queue in front of it, and a
per-request deadline, so an overloaded server answers at once instead of piling requests up."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

from ..errors import AllInOneError
from ..logs import RequestRecord
from .metrics import Metrics


class QueueFull(AllInOneError):
    """Too many requests are already waiting for the model."""

    message_zh = "服务繁忙，请稍后重试"
    retry_after = 1


class ModelLoading(AllInOneError):
    """The model is still loading."""

    message_zh = "模型加载中，请稍后重试"
    retry_after = 5


class RequestTimeout(AllInOneError):
    """The request waited for and ran on the model longer than `request_timeout`."""

    message_zh = "请求超时"


class Admission:
    """Who gets the model: `acquire` waits (in the event loop) for the slot, or refuses when `max_queue`
    requests are already waiting, the model is not loaded yet, or the request's deadline passes."""

    def __init__(self, max_queue: int, timeout: float, metrics: Metrics, ready: Callable[[], bool]) -> None:
        self._slot = anyio.Semaphore(1)
        self.max_queue = max_queue
        self.timeout = timeout  # seconds, queue plus run; 0 = none
        self.metrics = metrics
        self.ready = ready
        self.waiting = 0

    def deadline(self, rec: RequestRecord) -> float | None:
        """When the request must have ended, on the `time.perf_counter` clock."""
        return rec.started + self.timeout if self.timeout else None

    def expired(self, deadline: float | None) -> bool:
        """The deadline has passed (counted as a timeout)."""
        if deadline is None or time.perf_counter() < deadline:
            return False
        self.metrics.rejected("timeout")
        return True

    def _refuse(self, reason: str, error: AllInOneError) -> AllInOneError:
        self.metrics.rejected(reason)
        return error

    def check_ready(self) -> None:
        """ModelLoading unless the model is loaded: a request must not load it on its own time."""
        if not self.ready():
            raise self._refuse("loading", ModelLoading("the model is still loading; retry shortly"))

    async def acquire(self, deadline: float | None = None, again: bool = False) -> None:
        """Wait for the slot; `again`: the request already had its turn (`auto` after routing), so it queues
        even when the queue is full rather than being refused halfway."""
        self.check_ready()
        if self._slot.value == 0 and self.waiting >= self.max_queue and not again:
            raise self._refuse("queue_full", QueueFull(f"server busy: {self.waiting} requests already waiting"))
        self._wait(+1)
        try:
            left = None if deadline is None else max(deadline - time.perf_counter(), 0)
            with anyio.fail_after(left):
                await self._slot.acquire()
        except TimeoutError:
            raise self._refuse("timeout", RequestTimeout(f"no model slot within {self.timeout:g} s")) from None
        finally:
            self._wait(-1)

    def release(self) -> None:
        self._slot.release()

    async def drain(self, timeout: float) -> bool:
        """Wait until no request holds the model, then keep it (the server is stopping); False if one still
        did after `timeout` seconds."""
        with anyio.move_on_after(timeout):
            await self._slot.acquire()
            return True
        return False

    @asynccontextmanager
    async def hold(self, deadline: float | None = None, again: bool = False) -> AsyncIterator[None]:
        """The slot for a block, e.g. one blocking model call."""
        await self.acquire(deadline, again)
        try:
            yield
        finally:
            self.release()

    def _wait(self, delta: int) -> None:
        self.waiting += delta
        self.metrics.queue_depth = self.waiting
