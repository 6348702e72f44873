"""Admission control: the model's slots (as many requests as the engine really runs at once, in two lanes:
replies, and classifications, which never queue behind replies), a bounded queue in front of them, and a
per-request deadline, so an overloaded server answers at once instead of piling requests up."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal

import anyio

from ..engines.base import Slots
from ..errors import AllInOneError
from ..logs import RequestRecord
from .metrics import ServiceMetrics


class QueueFull(AllInOneError):
    """Too many requests are already waiting for the model."""

    message_zh = "服务繁忙，请稍后重试"
    retry_after = 1


class ModelLoading(AllInOneError):
    """The model is still loading."""

    message_zh = "模型加载中，请稍后重试"
    retry_after = 5


class ClientGone(AllInOneError):
    """The client closed the connection before its result was ready (logged as status 499)."""


class RequestTimeout(AllInOneError):
    """The request waited for and ran on the model longer than `request_timeout`."""

    message_zh = "请求超时"


Lane = Literal["generate", "score"]  # a reply being generated; a classification (one forward pass)


class Admission:
    """Who gets the model: `acquire` waits (in the event loop) for a slot of its lane, or refuses when `max_queue`
    requests are already waiting in that lane, the model is not loaded yet, or the request's deadline passes. Each
    lane has its own queue, so replies waiting for the model never get a classification refused. The lanes are
    sized by the engine (`Engine.slots`) once it is loaded."""

    def __init__(
        self,
        max_queue: int,
        timeout: float,
        metrics: ServiceMetrics,
        ready: Callable[[], bool],
        slots: Callable[[], Slots] = Slots,
    ) -> None:
        self._slots = slots
        self._lanes: dict[Lane, anyio.Semaphore] = {}
        self.sizes: dict[Lane, int] = {}
        self.max_queue = max_queue
        self.timeout = timeout  # seconds, queue plus run; 0 = none
        self.metrics = metrics
        self.ready = ready
        self._waiting: dict[Lane, int] = {"generate": 0, "score": 0}

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot, in both lanes."""
        return sum(self._waiting.values())

    def lane(self, name: Lane) -> anyio.Semaphore:
        if not self._lanes:
            slots = self._slots()
            self.sizes = {"generate": slots.generate, "score": slots.score}
            self._lanes = {lane: anyio.Semaphore(n) for lane, n in self.sizes.items()}
        return self._lanes[name]

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

    async def acquire(self, lane: Lane, deadline: float | None = None, again: bool = False) -> None:
        """Wait for a slot of the lane; `again`: the request already had its turn (`auto` after routing), so it
        queues even when the queue is full rather than being refused halfway."""
        self.check_ready()
        slot = self.lane(lane)
        waiting = self._waiting[lane]
        if slot.value == 0 and waiting >= self.max_queue and not again:
            raise self._refuse("queue_full", QueueFull(f"server busy: {waiting} requests already waiting"))
        self._wait(lane, +1)
        try:
            left = None if deadline is None else max(deadline - time.perf_counter(), 0)
            with anyio.fail_after(left):
                await slot.acquire()
        except TimeoutError:
            raise self._refuse("timeout", RequestTimeout(f"no model slot within {self.timeout:g} s")) from None
        finally:
            self._wait(lane, -1)

    def release(self, lane: Lane) -> None:
        self.lane(lane).release()

    async def drain(self, timeout: float) -> bool:
        """Wait until no request holds the model, then keep every slot (the server is stopping); False if one
        still did after `timeout` seconds."""
        lanes: tuple[Lane, ...] = ("generate", "score")
        taken: list[Lane] = []
        with anyio.move_on_after(timeout):
            for name in lanes:
                lane = self.lane(name)
                for _ in range(self.sizes[name]):
                    await lane.acquire()
                    taken.append(name)
            return True
        for name in taken:
            self.release(name)
        return False

    def undrain(self) -> None:
        """Give back every slot that `drain` kept (an app started again finds the model free)."""
        for name, lane in self._lanes.items():
            for _ in range(self.sizes[name] - lane.value):
                self.release(name)

    @asynccontextmanager
    async def hold(self, lane: Lane, deadline: float | None = None, again: bool = False) -> AsyncIterator[None]:
        """A slot for a block, e.g. one blocking model call."""
        await self.acquire(lane, deadline, again)
        try:
            yield
        finally:
            self.release(lane)

    def _wait(self, lane: Lane, delta: int) -> None:
        self._waiting[lane] += delta
        self.metrics.queue_depth = self.waiting
