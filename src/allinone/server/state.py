"""What the routes of one app share, and how a route gets it."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from fastapi import Request

from ..logs import RequestLog, RequestRecord
from ..router import Router
from ..sessions import SessionStore
from ..settings import Settings
from .metrics import Metrics


@dataclass
class Services:
    settings: Settings
    router: Router
    sessions: SessionStore
    metrics: Metrics
    log: RequestLog
    slot: anyio.Semaphore = field(default_factory=lambda: anyio.Semaphore(1))  # the model: one request at a time


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def record(request: Request) -> RequestRecord:
    """The request's log record, made by the Observe middleware."""
    found: RequestRecord = request.state.record
    return found
