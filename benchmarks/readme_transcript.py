"""The README's chat transcript: real output of this version, written by running the combined flow.

Run: PYTHONPATH=src .venv/bin/python benchmarks/readme_transcript.py
(writes benchmarks/results/readme_transcript.json and .md, and puts the .md between the README's transcript markers;
tests/test_readme.py checks the README shows exactly that file)
"""

from __future__ import annotations

import json
import subprocess
from importlib.metadata import version
from pathlib import Path

from allinone.chat import ChatSession
from allinone.events import Classified, Done, TaskCall
from allinone.generate import Generated
from allinone.service import TaskService
from allinone.settings import Settings

# --- knobs ---------------------------------------------------------------------------------------
SEED = 7  # `allinone chat --seed 7`
N_CTX = 4096
N_THREADS = 2  # fixed: a different thread count can round differently and flip a sampled token
CONVERSATIONS = [
    ["今天工作好累，老板还批评了我", "谢谢你，我感觉好一点了"],
    ["I finally got my driving licence today!"],
]

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "readme_transcript"
README = ROOT / "README.md"
START, END = "<!-- transcript: benchmarks/readme_transcript.py -->", "<!-- /transcript -->"


def cpu_model() -> str:
    """The CPU that produced the replies: other SIMD units round differently, and a sampled token can flip."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


def settings() -> Settings:
    """The engine settings of the transcript, also used by the test that replays it."""
    return Settings(n_ctx=N_CTX, n_threads=N_THREADS)


def run(service: TaskService, turns: list[str]) -> list[dict[str, str]]:
    session, out = ChatSession(), []
    for text in turns:
        call = TaskCall("chat", text, options={"seed": SEED}, session=session, sentiment="sentiment")
        events = list(service.run(call))
        first, last = events[0], events[-1]
        assert isinstance(first, Classified) and isinstance(last, Done) and isinstance(last.result, Generated)
        out.append({"user": text, "sentiment": first.result.display, "reply": last.result.text})
    return out


def markdown(conversations: list[list[dict[str, str]]], model: str, commit: str) -> str:
    lines = ["```", f"$ allinone chat --seed {SEED}"]
    for i, turns in enumerate(conversations):
        if i:
            lines.append("/reset")
        for t in turns:
            lines += [f"你> {t['user']}", t["sentiment"], f"助手> {t['reply']}"]
    lines.append("```")
    lines.append(
        f"\n(Real output of qwen-allinone {version('qwen-allinone')} at commit {commit}, model {model}, written by "
        "`benchmarks/readme_transcript.py`. A 0.5B model's replies are warm but not always apt.)"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    service = TaskService(settings())
    conversations = [run(service, turns) for turns in CONVERSATIONS]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    model = service.engine.info.model
    text = markdown(conversations, model, commit.strip() or "unknown")
    data = {"seed": SEED, "model": model, "commit": commit.strip(), "cpu": cpu_model(), "conversations": conversations}
    OUT.with_suffix(".json").write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    OUT.with_suffix(".md").write_text(text, encoding="utf-8")
    readme = README.read_text(encoding="utf-8")
    head, rest = readme.split(START, 1)
    README.write_text(f"{head}{START}\n{text}{END}{rest.split(END, 1)[1]}", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
