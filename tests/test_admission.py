"""Admission details on the fake engine: `auto` routing and the task it picks count as one place in the queue."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

from allinone.engines.base import Chunk, Conversation, GenParams, Slots, Usage
from allinone.server import create_app
from allinone.service import TaskService
from allinone.settings import Settings
from tests.fakes import FakeEngine


class GatedRouting(FakeEngine):
    """Routing blocks until `gate` is set; everything else answers at once."""

    def __init__(self) -> None:
        super().__init__(lambda prompt, word: math.log(0.9) if word in ("sentiment", "负面") else math.log(0.1))
        self.gate = threading.Event()
        self.routing = threading.Event()

    def score(self, conversation: Conversation, continuations: Sequence[str], hidden: bool = False) -> Any:
        if "task router" in self.preview(conversation):
            self.routing.set()
            self.gate.wait(10)
        return super().score(conversation, continuations, hidden)


def test_an_auto_request_is_not_refused_after_routing_when_others_queued_meanwhile(tmp_path: Path) -> None:
    engine = GatedRouting()
    settings = Settings(home=tmp_path, log_file=tmp_path / "requests.log", max_queue=1)
    app = create_app(settings, TaskService(settings, engine))
    admission = app.state.services.admission

    async def main() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            results: dict[str, int] = {}

            async def post(key: str, path: str) -> None:
                results[key] = (await c.post(path, json={"text": "这家酒店太差了"})).status_code

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(post, "auto", "/v1/tasks/auto")
                    while not engine.routing.is_set():  # routing holds the model
                        await anyio.sleep(0.01)
                    tg.start_soon(post, "other", "/analyze")
                    while admission.waiting < 1:  # the other request fills the queue
                        await anyio.sleep(0.01)
                    engine.gate.set()
        return results["auto"], results["other"]

    assert anyio.run(main) == (200, 200)


class SlottedEngine(FakeEngine):
    """Three replies at once, each blocked in its first step until `gate` is set."""

    slots = Slots(generate=3, score=2)

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.running = 0

    def stream(self, conversation: Conversation, params: GenParams) -> Iterator[Chunk]:
        self.running += 1
        try:
            self.gate.wait(10)
            yield Chunk("ok")
            yield Chunk("", "stop", Usage(1, 0, 1))
        finally:
            self.running -= 1


def test_admission_runs_as_many_replies_as_the_engine_has_slots_and_queues_the_rest(tmp_path: Path) -> None:
    engine = SlottedEngine()
    settings = Settings(home=tmp_path, log_file=tmp_path / "requests.log", max_queue=4)
    app = create_app(settings, TaskService(settings, engine))
    admission = app.state.services.admission

    async def main() -> tuple[list[int], int, int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            statuses: list[int] = []

            async def post() -> None:
                statuses.append((await c.post("/v1/tasks/chat", json={"text": "hi"})).status_code)

            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:
                    for _ in range(4):
                        tg.start_soon(post)
                    while admission.waiting < 1:  # the fourth waits for a slot
                        await anyio.sleep(0.01)
                    for _ in range(500):  # the admitted ones reach the engine from worker threads (slow on a busy CPU)
                        if engine.running >= 3:
                            break
                        await anyio.sleep(0.01)
                    await anyio.sleep(0.1)  # and no fourth joins them
                    running, waiting = engine.running, admission.waiting
                    classified = (await c.post("/analyze", json={"text": "好"})).status_code
                    engine.gate.set()
        return statuses, running, waiting, classified

    statuses, running, waiting, classified = anyio.run(main)
    assert (running, waiting) == (3, 1)  # three at once: the engine's slots, not one
    assert classified == 200  # the classification lane is not behind the replies
    assert statuses == [200] * 4


def test_each_lane_has_its_own_queue_so_waiting_replies_never_get_a_classification_refused() -> None:
    from allinone.server.admission import Admission, QueueFull
    from allinone.server.metrics import ServiceMetrics

    metrics = ServiceMetrics()
    admission = Admission(1, 0, metrics, lambda: True, lambda: Slots(generate=1, score=1))

    async def refused(lane: Any) -> bool:
        try:
            await admission.acquire(lane)
        except QueueFull:
            return True
        admission.release(lane)
        return False

    async def main() -> tuple[bool, bool, bool, int, int]:
        got: list[str] = []

        async def wait_for(lane: Any) -> None:
            await admission.acquire(lane)
            got.append(lane)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                await admission.acquire("generate")  # a reply runs
                tg.start_soon(wait_for, "generate")  # another waits: the replies' queue is full
                await admission.acquire("score")  # a classification runs
                while admission.waiting < 1:
                    await anyio.sleep(0.01)
                tg.start_soon(wait_for, "score")  # waits for the classification slot, not refused
                while admission.waiting < 2:
                    await anyio.sleep(0.01)
                depth = metrics.queue_depth
                score_refused = await refused("score")  # now the classifications' own queue is full
                generate_refused = await refused("generate")
                admission.release("score")
                admission.release("generate")
        for lane in got:
            admission.release(lane)
        return score_refused, generate_refused, sorted(got) == ["generate", "score"], depth, admission.waiting

    assert anyio.run(main) == (True, True, True, 2, 0)
    assert metrics.rejections[("queue_full",)] == 2
