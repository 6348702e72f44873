"""What the routes of one app share, and how a route gets it."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from ..logs import RequestLog, RequestRecord
from ..service import TaskService
from ..sessions import ANONYMOUS, SessionStore
from ..settings import Settings
from .admission import Admission
from .metrics import ServiceMetrics


@dataclass
class Services:
    settings: Settings
    service: TaskService
    sessions: SessionStore
    metrics: ServiceMetrics
    log: RequestLog
    warming: bool = False  # serve computes the tasks' prefixes before it says it is ready
    admission: Admission = field(init=False)  # the model's slots, as many as the engine runs at once; a bounded queue

    def __post_init__(self) -> None:
        s = self.settings
        self.admission = Admission(
            s.max_queue, s.request_timeout, self.metrics, self.ready, lambda: self.service.engine.slots
        )

    def ready(self) -> bool:
        """The model is loaded and its task prefixes are computed."""
        return self.service.loaded and not self.warming


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def record(request: Request) -> RequestRecord:
    """The request's log record, made by the Observe middleware."""
    found: RequestRecord = request.state.record
    return found


def owner(request: Request) -> str:
    """Whose sessions the request may use: its API key's owner, or everyone's on a server without keys."""
    found: str = getattr(request.state, "owner", ANONYMOUS)
    return found
