"""Is constrained decoding (an output schema) about as fast as free decoding?

For the keywords task and a JSON-schema chat request, the same prompt is decoded with and without the schema,
taking turns, and the decode speed (tokens after the first, per second of streaming) is compared. The grammar
checks only the token the sampler chose and masks the vocabulary only when it refuses it.
Run: .venv/bin/python benchmarks/structured.py   (writes benchmarks/results/structured.json)
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from serving import weights

# --- knobs ---------------------------------------------------------------------------------------
ROUNDS = 5
MAX_TOKENS = 96
N_THREADS = 2
KEYWORD_TEXTS = [
    "华为发布了新款折叠屏手机，搭载麒麟芯片，支持卫星通话。",
    "Tesla opened a new factory in Berlin to build electric cars and batteries for the European market.",
    "国家统计局公布数据，上半年国内生产总值同比增长百分之五，消费和投资稳步回升。",
]
CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "country": {"type": "string", "maxLength": 40},
        "population_millions": {"type": "number"},
        "famous_for": {"type": "array", "items": {"type": "string", "maxLength": 40}, "maxItems": 5},
    },
    "required": ["city", "country", "population_millions", "famous_for"],
    "additionalProperties": False,
}
CITY_PROMPT = "Describe Beijing as JSON with the fields city, country, population_millions and famous_for."

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "structured.json"


def decode_rate(engine: Any, conv: Any, params: Any) -> tuple[float, int, str]:
    """Tokens per second after the first token, the token count and the text."""
    first, parts, last = None, [], None
    for chunk in engine.stream(conv, params):
        if chunk.text and first is None:
            first = time.perf_counter()
        parts.append(chunk.text)
        last = chunk
    end = time.perf_counter()
    n = last.usage.completion_tokens if last and last.usage else 0
    return (n - 1) / (end - first) if first and n > 1 else 0.0, n, "".join(parts)


def main() -> None:
    from dataclasses import replace

    from allinone.engines import Conversation, GenParams, Message, llamacpp_file
    from allinone.engines.llamacpp import LlamaCppEngine
    from allinone.models import ensure_default
    from allinone.service import TaskService
    from allinone.settings import Settings
    from allinone.structured import parse_output

    settings = Settings(n_threads=N_THREADS)
    gguf = ensure_default(settings.models_dir)
    engine = LlamaCppEngine(llamacpp_file(gguf, settings), name="default", n_threads=N_THREADS)
    service = TaskService(settings, engine)
    keywords = service.task("keywords")
    cases = []
    for text in KEYWORD_TEXTS:
        params = GenParams(max_tokens=MAX_TOKENS)
        msgs, n_fixed = [*keywords.fixed_messages(), keywords.user_message(text)], len(keywords.fixed_messages())
        cases.append(
            ("keywords", Conversation.of(msgs, n_fixed), replace(params, temperature=0), keywords.output_schema)
        )
    city = Conversation.of([Message("user", CITY_PROMPT)])
    cases.append(("json_schema chat", city, GenParams(max_tokens=MAX_TOKENS, temperature=0), CITY_SCHEMA))

    rates: dict[str, dict[str, list[float]]] = {}
    valid: dict[str, list[bool]] = {}
    for _ in range(ROUNDS):
        for name, conv, params, schema in cases:
            free, _, _ = decode_rate(engine, conv, replace(params, schema=None, max_tokens=MAX_TOKENS))
            constrained, _, text = decode_rate(engine, conv, replace(params, schema=schema, max_tokens=MAX_TOKENS))
            rates.setdefault(name, {"free": [], "constrained": []})
            rates[name]["free"].append(free)
            rates[name]["constrained"].append(constrained)
            try:
                parse_output(schema, text, "stop")
                valid.setdefault(name, []).append(True)
            except Exception:
                valid.setdefault(name, []).append(False)
    rows = {}
    print("| request | free decode tok/s | with schema tok/s | ratio | valid JSON |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rates.items():
        free, constrained = statistics.median(r["free"]), statistics.median(r["constrained"])
        rows[name] = {"free_tok_s": free, "constrained_tok_s": constrained, "ratio": constrained / free}
        rows[name]["valid_json"] = sum(valid[name]) / len(valid[name])
        print(
            f"| {name} | {free:.1f} | {constrained:.1f} | {constrained / free:.2f} | {rows[name]['valid_json']:.0%} |"
        )
    result = {"rounds": ROUNDS, "n_threads": N_THREADS, "weights": weights(engine.info.details["path"], gguf)}
    OUT.write_text(json.dumps(result | {"rows": rows}, indent=2) + "\n")
    engine.close()


if __name__ == "__main__":
    main()
