"""Driving a blocking generator from async code: it is always closed, and closing waits for a running step."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import anyio

from allinone.server.streaming import END, ThreadedStream


def test_closing_waits_for_the_running_step_then_closes_the_generator() -> None:
    log: list[str] = []
    stepping = threading.Event()

    def slow() -> Iterator[int]:
        try:
            for i in range(100):
                stepping.set()
                time.sleep(0.05)
                yield i
        finally:
            log.append("closed")

    async def main() -> None:
        stream = ThreadedStream(slow())
        assert await stream.next() == 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream.next)  # a step is running in a worker thread...
            await anyio.to_thread.run_sync(stepping.wait)
            tg.cancel_scope.cancel()  # ...when the request is cancelled (the client went away)
        await stream.aclose()
        assert log == ["closed"]
        assert await stream.next() is END

    anyio.run(main)


def test_a_finished_stream_ends() -> None:
    async def main() -> list[object]:
        stream = ThreadedStream(iter([1, 2]))
        return [await stream.next() for _ in range(3)]

    assert anyio.run(main) == [1, 2, END]
