"""Admission details on the fake engine: `auto` routing and the task it picks count as one place in the queue."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

from allinone.engines.base import Prompt
from allinone.router import Router
from allinone.server import create_app
from allinone.settings import Settings
from tests.fakes import FakeEngine


class GatedRouting(FakeEngine):
    """Routing blocks until `gate` is set; everything else answers at once."""

    def __init__(self) -> None:
        super().__init__(lambda prompt, word: math.log(0.9) if word in ("sentiment", "负面") else math.log(0.1))
        self.gate = threading.Event()
        self.routing = threading.Event()

    def score(self, prompt: Prompt, continuations: Sequence[str], hidden: bool = False) -> Any:
        if "task router" in prompt.text:
            self.routing.set()
            self.gate.wait(10)
        return super().score(prompt, continuations, hidden)


def test_an_auto_request_is_not_refused_after_routing_when_others_queued_meanwhile(tmp_path: Path) -> None:
    engine = GatedRouting()
    settings = Settings(home=tmp_path, log_file=tmp_path / "requests.log", max_queue=1)
    app = create_app(settings, Router(settings, engine))
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
