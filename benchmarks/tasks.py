"""Per-task benchmark on the default model: p50 latency and tokens for a fixed set of inputs per task.

Run: ALLINONE_N_THREADS=2 .venv/bin/python benchmarks/tasks.py
(prints a Markdown table, writes benchmarks/results/tasks.json). Each task first runs one warm-up input so
that its prompt prefix is cached, as it is in a running service; `auto` is the routing step alone.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from allinone.service import TaskService
from allinone.settings import Settings
from serving import engine_weights

# --- knobs ---------------------------------------------------------------------------------------
SEED = 1
CHAT_MAX_TOKENS = 128
WARMUP = "这是一条预热消息。This is a warm-up message."
INPUTS = {
    "sentiment": [
        "这家酒店服务太差了，再也不来了",
        "房间干净整洁，前台服务热情周到，下次还会再来。",
        "The hotel staff were friendly and the room was spotless.",
        "Terrible service, cold food and a rude waiter. Never again.",
        "快递三天就到了，包装完好，非常满意！",
        "The app keeps freezing and deleted all my notes. Awful.",
    ],
    "intent": [
        "请问这款手机有黑色的吗？多少钱？",
        "你们的快递太慢了，我要投诉！",
        "我想买两件这个T恤，L码。",
        "I bought a blender last month and it stopped working. Can I get a refund?",
        "Do you ship to Canada?",
        "Thanks, have a nice day!",
    ],
    "chat": [
        "最近工作压力很大，晚上总是睡不着，有什么办法吗？",
        "Can you suggest a simple plan to start running three times a week?",
        "我想给妈妈准备一份生日惊喜，有什么建议？",
        "I'm nervous about a job interview tomorrow.",
        "周末一个人在家有点无聊。",
        "What's a good book for learning to cook?",
    ],
    "summary": [
        "近日，某市地铁3号线正式开通运营。该线路全长25公里，设站18座，连接城市东部新区与老城区。开通后，东部居民进城通勤时间"
        "将从一个多小时缩短到40分钟左右。首日客流量超过12万人次，部分站点在早高峰出现排队现象。市交通局表示，将根据客流情况"
        "加密班次，并在换乘站增加引导人员。",
        "今年夏天，全国多地出现持续高温天气，部分城市最高气温超过40摄氏度。电力部门启动应急预案，保障居民用电。气象专家提醒"
        "市民减少午间外出，注意防暑降温，老人和儿童尤其要注意补充水分。",
        "随着人工智能技术的快速发展，越来越多的企业开始将大模型应用到客服、写作和编程等场景中。专家认为，这将显著提升工作效率，"
        "但同时也带来了数据安全、隐私保护和就业结构变化等新问题，需要政府、企业和社会共同应对。",
        "Researchers in Canada have developed a battery made from wood fibres and salt water. It is cheap to "
        "produce, does not catch fire and can be recycled. In tests it kept 90 percent of its capacity after 1,000 "
        "cycles. It is not yet powerful enough for electric cars, but it could store energy from solar and wind farms.",
        "The city council approved a new budget on Tuesday that increases spending on public transport by 15 "
        "percent. The plan includes more frequent buses, two new tram lines, and discounted fares for students. "
        "Critics say the budget does not address housing costs; supporters say better transport helps everyone.",
        "Sales grew 8% in the first quarter, driven by strong demand in Asia. Costs also rose because of higher "
        "shipping prices. The company expects growth to slow in the second half and will delay two product launches.",
    ],
    "keywords": [
        "今天北京天气晴朗，我们去颐和园划船，中午吃了全聚德烤鸭。",
        "新能源汽车销量持续增长，比亚迪和特斯拉占据了主要市场份额。",
        "华为发布了新款折叠屏手机，搭载麒麟芯片，支持卫星通话。",
        "Apple released the new iPhone with a faster chip and a better camera.",
        "Climate change is causing glaciers in the Alps to melt faster than expected.",
        "NASA's Artemis mission aims to return astronauts to the Moon by 2026.",
    ],
    "translate": [
        "今天天气很好，我们去公园散步吧。",
        "这家餐厅的菜很好吃，但是价格有点贵。",
        "我明天要去北京出差。",
        "The meeting has been moved to Friday afternoon.",
        "She has been learning Chinese for three years.",
        "Please keep your ticket until the end of the journey.",
    ],
}
INPUTS["auto"] = [texts[0] for texts in INPUTS.values()]

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "tasks.json"


def run_one(service: TaskService, task: str, text: str) -> dict[str, Any]:
    """One request; its wall time and token counts."""
    start = time.perf_counter()
    if task == "auto":
        usage = service.pick_task(text).usage
    elif service.task(task).kind == "classify":
        usage = service.classify(task, text).usage
    else:
        max_tokens = CHAT_MAX_TOKENS if task == "chat" else None
        usage = service.generate(task, text, options={"seed": SEED, "max_tokens": max_tokens}).usage
    seconds = time.perf_counter() - start
    return {"s": seconds, "prompt": usage.prompt_tokens, "cached": usage.cached_tokens, "out": usage.completion_tokens}


def main() -> None:
    settings = Settings()
    service = TaskService(settings)
    service.engine  # noqa: B018 - load before timing
    rows = []
    for task, texts in INPUTS.items():
        run_one(service, task, WARMUP)  # caches the task's prefix, as a running service has it
        runs = [run_one(service, task, t) for t in texts]
        out_tokens = sum(r["out"] for r in runs)
        gen_seconds = sum(r["s"] for r in runs if r["out"])
        rows.append(
            {
                "task": task,
                "n": len(runs),
                "p50_s": round(statistics.median(r["s"] for r in runs), 3),
                "max_s": round(max(r["s"] for r in runs), 3),
                "prompt_tokens": round(statistics.mean(r["prompt"] for r in runs), 1),
                "cached_tokens": round(statistics.mean(r["cached"] for r in runs), 1),
                "completion_tokens": round(statistics.mean(r["out"] for r in runs), 1),
                "tokens_per_s": round(out_tokens / gen_seconds, 1) if out_tokens else None,
            }
        )
        print(f"{task}: p50 {rows[-1]['p50_s']} s", flush=True)
    print()
    print("| task | p50 latency | max | prompt tokens (cached) | output tokens | output tokens/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        speed = r["tokens_per_s"] if r["tokens_per_s"] is not None else "–"
        print(
            f"| {r['task']} | {r['p50_s']:.2f} s | {r['max_s']:.2f} s | {r['prompt_tokens']:.0f} "
            f"({r['cached_tokens']:.0f}) | {r['completion_tokens']:.0f} | {speed} |"
        )
    result = {
        "model": service.engine.info.model,
        "n_threads": settings.n_threads,
        "machine": f"{platform.machine()} {platform.system()}",
        "chat_max_tokens": CHAT_MAX_TOKENS,
        "weights": engine_weights(service.engine, settings),
        "tasks": rows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
