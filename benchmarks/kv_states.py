"""What keeping a chat's KV state costs the scheduler thread, by conversation length: while it saves a finished
turn or restores the next one, every running stream waits.

The default model (widened, as the server loads it), one sequence holding a conversation of N tokens, on the
scheduler thread: saving it (`llama_state_seq_get_data`), cutting off the task prefix's cells (kvstate.cells_from,
what a finished turn keeps), joining the prefix's state and the conversation's own (kvstate.join, what the next
turn restores) and restoring that into a sequence. Each the median of ROUNDS.
Run: .venv/bin/python benchmarks/kv_states.py   (prints a table, writes benchmarks/results/kv_states.json)
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

# --- knobs ---------------------------------------------------------------------------------------
LENGTHS = (300, 1000, 2000, 4000)  # tokens of the conversation
PREFIX = 250  # of which the task prefix (the built-in chat task's system prompt is about this long)
ROUNDS = 9
N_THREADS = 2

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "kv_states.json"


def main() -> None:
    from allinone.engines import kvstate, llamacpp_file
    from allinone.engines.llamacpp import LlamaCppEngine
    from allinone.models import ensure_default
    from allinone.settings import Settings

    settings = Settings()
    engine = LlamaCppEngine(
        llamacpp_file(ensure_default(settings.models_dir), settings), name="default", n_threads=N_THREADS
    )
    ctx = engine._ctx

    def measure(n: int) -> dict[str, float]:
        ctx.seq_rm(0, 0)
        tokens = [100 + i % 5000 for i in range(n)]
        for start in range(0, n, ctx.n_batch):
            ctx.decode([(t, start + i, 0, False) for i, t in enumerate(tokens[start : start + ctx.n_batch])])
        ctx.seq_cp(0, 2, PREFIX)  # sequence 2 holds the task prefix alone: its state is what the prefix keeps
        prefix = ctx.save(2)
        ctx.seq_rm(2, 0)
        times: dict[str, list[float]] = {"save": [], "cut": [], "join": [], "restore": []}
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            whole = ctx.save(0)
            t1 = time.perf_counter()
            own = kvstate.cells_from(whole, PREFIX)
            t2 = time.perf_counter()
            joined = kvstate.join(prefix, own)
            t3 = time.perf_counter()
            ctx.seq_rm(1, 0)
            t4 = time.perf_counter()
            assert ctx.restore(1, joined)
            t5 = time.perf_counter()
            for name, seconds in (("save", t1 - t0), ("cut", t2 - t1), ("join", t3 - t2), ("restore", t5 - t4)):
                times[name].append(seconds)
        ctx.seq_rm(0, 0)
        ctx.seq_rm(1, 0)
        row: dict[str, Any] = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
        return row | {"state_mb": len(whole) / 1e6, "joined_mb": len(joined) / 1e6}

    rows = {n: engine._scheduler.call(lambda n=n: measure(n)) for n in LENGTHS}
    engine.close()
    print(f"{'tokens':>6} {'state MB':>9} {'save ms':>8} {'cut ms':>7} {'join ms':>8} {'restore ms':>11}")
    for n, r in rows.items():
        cells = f"{r['save']:>8.1f} {r['cut']:>7.1f} {r['join']:>8.1f} {r['restore']:>11.1f}"
        print(f"{n:>6} {r['state_mb']:>9.1f} {cells}")
    knobs = {"lengths": list(LENGTHS), "prefix": PREFIX, "rounds": ROUNDS, "n_threads": N_THREADS}
    OUT.write_text(json.dumps({"knobs": knobs, "rows": {str(n): r for n, r in rows.items()}}, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
