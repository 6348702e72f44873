"""Prometheus metrics, written by hand in the text exposition format (no client library needed)."""

from __future__ import annotations

import threading
from collections import defaultdict

from ..engines.base import Busy, Usage

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)  # seconds

_Key = tuple[str, ...]


def _labels(names: tuple[str, ...], values: _Key) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{n}="{esc(v)}"' for n, v in zip(names, values, strict=True))


class ServiceMetrics:
    """Counters, a latency histogram and a gauge for one app; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: defaultdict[_Key, int] = defaultdict(int)  # (task, route, status)
        self.tokens: defaultdict[_Key, int] = defaultdict(int)  # (task, kind)
        self.cache_hits: defaultdict[_Key, int] = defaultdict(int)  # (task,)
        self.latency: dict[_Key, list[float]] = {}  # (task, route) -> bucket counts, then sum, count
        self.rejections: defaultdict[_Key, int] = defaultdict(int)  # (reason,)
        self.in_flight = 0
        self.queue_depth = 0  # requests waiting for the model
        self.model_loaded = 0

    def rejected(self, reason: str) -> None:
        """A model request refused or cut short: queue_full, loading, timeout."""
        with self._lock:
            self.rejections[(reason,)] += 1

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def finished(self, task: str, route: str, status: int, seconds: float, usage: Usage, counted: bool = True) -> None:
        """One request ended; `counted` says it was counted by `started` (in flight)."""
        with self._lock:
            self.in_flight -= counted
            self.requests[task, route, str(status)] += 1
            h = self.latency.setdefault((task, route), [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1
            for kind, n in (
                ("prompt", usage.prompt_tokens),
                ("cached", usage.cached_tokens),
                ("completion", usage.completion_tokens),
            ):
                if n:
                    self.tokens[task, kind] += n
            if usage.cached_tokens:
                self.cache_hits[(task,)] += usage.cached_tokens

    def render(self, busy: Busy | None = None) -> str:
        """The text exposition format; with `busy`, the engine's model work (steps and seconds) too."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("allinone_requests_total", "counter", "HTTP requests by task, route and status.")
            for key, n in sorted(self.requests.items()):
                out.append(f"allinone_requests_total{{{_labels(('task', 'route', 'status'), key)}}} {n}")
            family("allinone_request_duration_seconds", "histogram", "Request latency until the last byte.")
            for key, h in sorted(self.latency.items()):
                labels = _labels(("task", "route"), key)
                for bound, count in zip(BUCKETS, h, strict=False):
                    out.append(f'allinone_request_duration_seconds_bucket{{{labels},le="{bound}"}} {int(count)}')
                out.append(f'allinone_request_duration_seconds_bucket{{{labels},le="+Inf"}} {int(h[-1])}')
                out.append(f"allinone_request_duration_seconds_sum{{{labels}}} {h[-2]:.6f}")
                out.append(f"allinone_request_duration_seconds_count{{{labels}}} {int(h[-1])}")
            family(
                "allinone_tokens_total", "counter", "Tokens by task and kind: prompt, cached (of prompt), completion."
            )
            for key, n in sorted(self.tokens.items()):
                out.append(f"allinone_tokens_total{{{_labels(('task', 'kind'), key)}}} {n}")
            family("allinone_cache_hit_tokens_total", "counter", "Prompt tokens served from the KV cache.")
            for key, n in sorted(self.cache_hits.items()):
                out.append(f"allinone_cache_hit_tokens_total{{{_labels(('task',), key)}}} {n}")
            family("allinone_in_flight_requests", "gauge", "Requests being served now.")
            out.append(f"allinone_in_flight_requests {self.in_flight}")
            family("allinone_queue_depth", "gauge", "Requests waiting for the model.")
            out.append(f"allinone_queue_depth {self.queue_depth}")
            family("allinone_rejected_total", "counter", "Model requests refused or cut short, by reason.")
            for key, n in sorted(self.rejections.items()):
                out.append(f"allinone_rejected_total{{{_labels(('reason',), key)}}} {n}")
            family("allinone_model_loaded", "gauge", "1 once the model is loaded.")
            out.append(f"allinone_model_loaded {self.model_loaded}")
        if busy is not None:
            family(
                "allinone_engine_steps_total", "counter", "Forward passes of the model, each batching every request."
            )
            out.append(f"allinone_engine_steps_total {busy.steps}")
            family(
                "allinone_engine_busy_seconds_total",
                "counter",
                "Seconds the model spent computing; its rate is the utilisation (near 1: requests can only queue).",
            )
            out.append(f"allinone_engine_busy_seconds_total {busy.seconds:.6f}")
        return "\n".join(out) + "\n"
