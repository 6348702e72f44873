"""What `PRAGMA synchronous=FULL` costs the session store against NORMAL, next to a chat turn on the real model.

WAL with NORMAL does not fsync at commit, so a committed turn can be lost on power loss; FULL fsyncs the WAL at
every commit. Two costs are measured, each with the two modes interleaved so that machine load hits both alike:
the store's own append of a turn pair (what FULL changes), on the filesystem of ALLINONE_HOME, and whole chat
turns on the default model (a short reply, the worst case for the share). Rule: FULL unless its extra cost is
more than 5% of a chat turn.

Run: .venv/bin/python benchmarks/session_sync.py   (prints a table, writes benchmarks/results/session_sync.json)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

# --- knobs ---------------------------------------------------------------------------------------
APPENDS = 400  # turn pairs appended per mode
TURNS = 12  # chat turns per mode on the real model
MAX_TOKENS = 24  # reply length of those turns: short, so the store's share is the largest it gets
THRESHOLD_PCT = 5.0
USER = "今天工作好累，老板还批评了我，晚上还要加班。"  # a typical message, and a reply of typical length
REPLY = "辛苦了！被批评确实让人难受，先照顾好自己，晚上加班前吃点东西、休息一下，明天再和老板聊聊。" * 2

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "session_sync.json"
MODES = ("NORMAL", "FULL")


def quantiles(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), "p50_ms": statistics.median(ms), "p95_ms": statistics.quantiles(ms, n=20)[-1]}


def append_costs(where: Path) -> dict[str, list[float]]:
    """Milliseconds per turn-pair append, per mode, alternating between the two stores."""
    from allinone.chat import Turn
    from allinone.sessions import ANONYMOUS, SqliteSessions

    stores = {m: SqliteSessions(where / f"{m}.sqlite3", synchronous=m) for m in MODES}
    sessions = {m: stores[m].open(None, ANONYMOUS) for m in MODES}
    ms: dict[str, list[float]] = {m: [] for m in MODES}
    for i in range(APPENDS):
        for m in MODES if i % 2 else reversed(MODES):
            start = time.perf_counter()
            sessions[m].append(Turn("user", USER), Turn("assistant", REPLY))
            ms[m].append((time.perf_counter() - start) * 1000)
            if len(sessions[m].turns) >= 900:  # stay under the turns cap
                sessions[m] = stores[m].open(None, ANONYMOUS)
    for store in stores.values():
        store.close()
    return ms


def chat_turns(where: Path) -> dict[str, list[float]]:
    """Seconds of whole chat turns on the real model, per mode, alternating, each mode its own session."""
    from allinone.service import TaskService
    from allinone.sessions import ANONYMOUS, SqliteSessions
    from allinone.settings import Settings

    service = TaskService(Settings())
    service.engine  # noqa: B018 - load before timing
    stores = {m: SqliteSessions(where / f"chat-{m}.sqlite3", synchronous=m) for m in MODES}
    ids: dict[str, str | None] = dict.fromkeys(MODES)
    ms: dict[str, list[float]] = {m: [] for m in MODES}
    for i in range(TURNS + 1):  # the first round warms the cache and is not counted
        for m in MODES if i % 2 else reversed(MODES):
            start = time.perf_counter()
            session = stores[m].open(ids[m], ANONYMOUS)
            service.generate("chat", USER, session, {"max_tokens": MAX_TOKENS, "seed": i})
            if i:
                ms[m].append((time.perf_counter() - start) * 1000)
            ids[m] = session.id
    for store in stores.values():
        store.close()
    return ms


def main() -> None:
    from allinone.settings import Settings

    home = Settings().home
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home, prefix="bench-sync-") as tmp:  # the store's own filesystem
        appends, turns = append_costs(Path(tmp)), chat_turns(Path(tmp))
    a = {m: quantiles(appends[m]) for m in MODES}
    t = {m: quantiles(turns[m]) for m in MODES}
    extra = a["FULL"]["p50_ms"] - a["NORMAL"]["p50_ms"]
    share = 100 * extra / t["NORMAL"]["p50_ms"]
    choice = "FULL" if share <= THRESHOLD_PCT else "NORMAL"
    result: dict[str, Any] = {
        "config": {"appends": APPENDS, "turns": TURNS, "max_tokens": MAX_TOKENS, "threshold_pct": THRESHOLD_PCT},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "filesystem_of": str(home),
        "append": a,
        "chat_turn": t,
        "full_extra_ms": extra,
        "full_extra_pct_of_turn": share,
        "choice": choice,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"session store: synchronous NORMAL vs FULL (WAL), on the filesystem of {home}")
    print(f"{'':<34}{'NORMAL p50':>12}{'FULL p50':>12}{'NORMAL p95':>12}{'FULL p95':>12}")
    for name, q in ((f"append a turn pair (ms, n={APPENDS})", a), (f"chat turn, real model (ms, n={TURNS})", t)):
        row = f"{q['NORMAL']['p50_ms']:>12.2f}{q['FULL']['p50_ms']:>12.2f}"
        print(f"{name:<34}{row}{q['NORMAL']['p95_ms']:>12.2f}{q['FULL']['p95_ms']:>12.2f}")
    print(f"FULL adds {extra:.2f} ms per turn = {share:.2f}% of a chat turn (limit {THRESHOLD_PCT}%) -> {choice}")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
