"""The command line: a thin edge over the same Router the HTTP service uses."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click

from .errors import AllInOneError
from .settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


class UserError(click.ClickException):
    """A user's mistake: one line on stderr, exit code 2, no traceback."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AllInOneError as e:
            raise UserError(str(e)) from None


def model_options(f: F) -> F:
    """--model and --tasks-dir, which override ALLINONE_MODEL / ALLINONE_TASKS_DIR."""
    f = click.option(
        "--tasks-dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Extra dir of task YAML files [env ALLINONE_TASKS_DIR].",
    )(f)
    f = click.option(
        "--model",
        "-m",
        default=None,
        help="default, a .gguf path or hf:ORG/REPO/FILE.gguf [env ALLINONE_MODEL].",
    )(f)
    return f


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _router(model: str | None, tasks_dir: Path | None) -> Any:
    from .router import Router

    return Router(_settings(model=model, tasks_dir=tasks_dir))


def _read_text(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


def _probs_line(probs: dict[str, float]) -> str:
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    return " · ".join(f"{k} {v:.2f}" for k, v in ranked)


@click.group(cls=_Group)
@click.version_option(package_name="qwen-allinone")
def cli() -> None:
    """One small local LLM, loaded once, serving many prompt-defined tasks."""


@cli.command()
@click.argument("task")
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--max-tokens", type=click.IntRange(1, 8192), default=None, help="Generate tasks: token limit.")
@click.option("--temperature", type=click.FloatRange(0, 2), default=None, help="Generate tasks: temperature.")
@click.option("--seed", type=int, default=None, help="Generate tasks: sampling seed.")
@model_options
def run(
    task: str,
    text: str,
    as_json: bool,
    max_tokens: int | None,
    temperature: float | None,
    seed: int | None,
    model: str | None,
    tasks_dir: Path | None,
) -> None:
    """Run TASK on TEXT ('-' reads stdin)."""
    router = _router(model, tasks_dir)
    t = router.task(task)
    text = _read_text(text)
    start = time.perf_counter()
    if t.kind == "classify":
        result = router.classify(task, text)
        ms = (time.perf_counter() - start) * 1000
        if as_json:
            click.echo(json.dumps({**asdict(result), "timing_ms": round(ms, 1)}, ensure_ascii=False))
        else:
            click.echo(f"{result.display}   ({_probs_line(result.probabilities)})")
        return
    options = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    stream = router.stream(task, text, options=options)
    parts, last = [], None
    for chunk in stream:
        parts.append(chunk.text)
        if not as_json:
            click.echo(chunk.text, nl=False)
        last = chunk
    ms = (time.perf_counter() - start) * 1000
    if as_json:
        usage = asdict(last.usage) if last and last.usage else None
        click.echo(
            json.dumps(
                {
                    "task": task,
                    "text": "".join(parts),
                    "finish_reason": last and last.finish_reason,
                    "usage": usage,
                    "timing_ms": round(ms, 1),
                },
                ensure_ascii=False,
            )
        )
    else:
        click.echo()


@cli.command()
@click.option("--no-sentiment", is_flag=True, help="Plain chat, without the sentiment line.")
@click.option("--seed", type=int, default=None, help="Sampling seed.")
@model_options
def chat(no_sentiment: bool, seed: int | None, model: str | None, tasks_dir: Path | None) -> None:
    """Interactive chat: each message gets its sentiment line, then the streamed reply."""
    from .chat import ChatSession
    from .classify import Classification

    router = _router(model, tasks_dir)
    router.engine  # load now, not on the first message  # noqa: B018
    session = ChatSession()
    click.echo("输入消息开始对话；/reset 清空历史，/exit 退出。 (Type a message; /reset, /exit.)", err=True)
    while True:
        try:
            line = input("你> " if sys.stdin.isatty() else "")
        except (EOFError, KeyboardInterrupt):
            click.echo()
            return
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            session.reset()
            click.echo("（对话已清空 / history cleared）")
            continue
        options = {"seed": seed}
        events = (
            router.stream("chat", line, session, options)
            if no_sentiment
            else router.analyze_and_reply(session, line, options)
        )
        try:
            for event in events:
                if isinstance(event, Classification):
                    click.echo(event.display)
                    click.echo("助手> ", nl=False)
                else:
                    click.echo(event.text, nl=False)
        except AllInOneError as e:
            click.echo(f"error: {e}", err=True)
        click.echo()


@cli.group(invoke_without_command=True, cls=_Group)
@click.option("--tasks-dir", type=click.Path(path_type=Path), default=None, help="Extra dir of task YAML files.")
@click.pass_context
def tasks(ctx: click.Context, tasks_dir: Path | None) -> None:
    """List the tasks (built-in and user), or show one."""
    ctx.obj = tasks_dir
    if ctx.invoked_subcommand is None:
        ctx.invoke(tasks_list)


def _load(tasks_dir: Path | None) -> dict[str, Any]:
    from .tasks import load_tasks

    return load_tasks(tasks_dir or _settings().tasks_dir)


@tasks.command("list")
@click.pass_obj
def tasks_list(tasks_dir: Path | None) -> None:
    """List every task with its kind and description."""
    for t in _load(tasks_dir).values():
        click.echo(f"{t.name:<12} {t.kind:<9} {' '.join(t.description.split())}")


@tasks.command("show")
@click.argument("name")
@click.pass_obj
def tasks_show(tasks_dir: Path | None, name: str) -> None:
    """Show one task's definition and where it comes from."""
    from .errors import TaskNotFound

    found = _load(tasks_dir).get(name)
    if found is None:
        raise TaskNotFound(f"unknown task '{name}'")
    click.echo(f"# {found.source}")
    click.echo(found.source.read_text(encoding="utf-8") if found.source else json.dumps(found.model_dump()))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models(as_json: bool) -> None:
    """List known models: where they live and their size."""
    from .models import list_models

    rows = list_models(_settings())
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    for r in rows:
        size = f"{int(r['size']) / 1e6:.1f} MB" if r["size"] else "-"
        click.echo(f"{r['ref']}\n    {r['name']} · {size} · {r['status']}\n    {r['path']}")


def main() -> None:
    cli(prog_name="allinone")
