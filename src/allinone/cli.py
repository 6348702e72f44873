"""The command line: a thin edge over the same TaskService the HTTP service uses."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

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
        except ValidationError as e:
            if e.title != Settings.__name__:
                raise
            raise UserError(_settings_message(e)) from None


def _settings_message(e: ValidationError) -> str:
    """A bad setting (an ALLINONE_* variable) as the user wrote it, with what it should be."""
    return "; ".join(
        f"ALLINONE_{'_'.join(str(p) for p in err['loc']).upper()}={err.get('input')!r}: {err['msg']}"
        for err in e.errors()
    )


def _remember_engine(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.meta["allinone.engine"] = value


def _remember_no_head(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta["allinone.use_heads"] = False


def model_options(f: F) -> F:
    """--model, --engine, --tasks-dir and --no-head, which override ALLINONE_MODEL / ALLINONE_ENGINE /
    ALLINONE_TASKS_DIR / ALLINONE_USE_HEADS."""
    f = click.option(
        "--no-head",
        is_flag=True,
        expose_value=False,  # read by _settings, like --engine
        callback=_remember_no_head,
        help="Classify tasks: label scoring alone, without the task's learned head [env ALLINONE_USE_HEADS=0].",
    )(f)
    f = click.option(
        "--engine",
        type=click.Choice(["auto", "llamacpp", "transformers", "openai"]),
        default=None,
        expose_value=False,  # read by _settings, so every command gets it without a parameter of its own
        callback=_remember_engine,
        help="Inference backend; auto picks by the model reference [env ALLINONE_ENGINE; default auto].",
    )(f)
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
        help="default, qwen-1.5b, a .gguf path, hf:ORG/REPO/FILE.gguf, a transformers dir or hub id ORG/NAME, or"
        " openai:[NAME] [env ALLINONE_MODEL].",
    )(f)
    return f


def _settings(**overrides: Any) -> Settings:
    ctx = click.get_current_context(silent=True)
    overrides.setdefault("engine", ctx.meta.get("allinone.engine") if ctx else None)
    overrides.setdefault("batch_size", ctx.meta.get("allinone.batch_size") if ctx else None)
    overrides.setdefault("use_heads", ctx.meta.get("allinone.use_heads") if ctx else None)
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _service(model: str | None, tasks_dir: Path | None, probe_layer: int | None = None) -> Any:
    from .service import TaskService

    return TaskService(_settings(model=model, tasks_dir=tasks_dir), probe_layer=probe_layer)


def _read_text(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


def _probs_line(probs: dict[str, float]) -> str:
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    return " · ".join(f"{k} {v:.2f}" for k, v in ranked)


@click.group(cls=_Group)
@click.version_option(package_name="qwen-allinone")
def cli() -> None:
    """One small local LLM, loaded once, serving many prompt-defined tasks."""


def _pairs(pairs: tuple[str, ...], flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} expects KEY=VALUE, got '{pair}'")
        out[key.strip()] = value.strip()
    return out


@cli.command()
@click.argument("task")
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option(
    "--option",
    "-O",
    "task_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A task option, e.g. length=short or target=en (repeat; `allinone tasks show TASK` lists them).",
)
@click.option("--max-tokens", type=click.IntRange(1, 8192), default=None, help="Generate tasks: token limit.")
@click.option("--temperature", type=click.FloatRange(0, 2), default=None, help="Generate tasks: temperature.")
@click.option("--seed", type=int, default=None, help="Generate tasks: sampling seed.")
@model_options
def run(
    task: str,
    text: str,
    as_json: bool,
    task_options: tuple[str, ...],
    max_tokens: int | None,
    temperature: float | None,
    seed: int | None,
    model: str | None,
    tasks_dir: Path | None,
) -> None:
    """Run TASK on TEXT ('-' reads stdin); TASK `auto` lets the model pick the task first."""
    from .engines.base import GENERATION_OPTIONS
    from .events import Classified, Done, Picked, TaskCall, Token

    own = _pairs(task_options, "--option")
    flags = sorted(set(own) & set(GENERATION_OPTIONS))
    if flags:
        raise UserError(f"{flags} are generation settings: use --max-tokens, --temperature, --seed")
    service = _service(model, tasks_dir)
    options = {**own, "max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    call = TaskCall(task, _read_text(text), options=options)
    service.engine  # noqa: B018 - load first, so timing_ms is the request alone
    start = time.perf_counter()
    picked, streamed = None, False
    for event in service.run(call):
        if isinstance(event, Picked):
            picked = event.pick
            if not as_json:
                click.echo(f"auto → {picked.task} ({picked.probability:.2f})")
        elif isinstance(event, Token) and not as_json and service.task(call_task(picked, task)).output_schema is None:
            click.echo(event.text, nl=False)  # a structured reply is shown whole, once parsed
            streamed = True
        elif isinstance(event, Done):
            _print_result(event.result, picked, as_json, streamed, (time.perf_counter() - start) * 1000)
        elif isinstance(event, Classified):
            pass  # the same result comes with Done


def call_task(picked: Any, task: str) -> str:
    """The task that runs: the one auto picked, else the one named."""
    return picked.task if picked is not None else task


def _print_result(result: Any, picked: Any, as_json: bool, streamed: bool, ms: float) -> None:
    from .classify import Classification

    if as_json:
        extra = {"route": asdict(picked)} if picked else {}
        click.echo(json.dumps({**extra, **asdict(result), "timing_ms": round(ms, 1)}, ensure_ascii=False))
    elif isinstance(result, Classification):
        note = "  [the server has no logprobs: the model's choice]" if result.scoring == "choice" else ""
        click.echo(f"{result.display}   ({_probs_line(result.probabilities)}){note}")
    elif streamed:
        click.echo()
    else:
        click.echo(json.dumps(result.data, ensure_ascii=False))


@cli.command()
@click.option("--no-sentiment", is_flag=True, help="Plain chat, without the sentiment line.")
@click.option("--seed", type=int, default=None, help="Sampling seed.")
@model_options
def chat(no_sentiment: bool, seed: int | None, model: str | None, tasks_dir: Path | None) -> None:
    """Interactive chat: each message gets its sentiment line, then the streamed reply."""
    from .chat import ChatSession
    from .events import Classified, TaskCall, Token

    service = _service(model, tasks_dir)
    service.engine  # load now, not on the first message  # noqa: B018
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
        call = TaskCall("chat", line, None, {"seed": seed}, session, None if no_sentiment else "sentiment")
        try:
            for event in service.run(call):
                if isinstance(event, Classified):
                    click.echo(event.result.display)
                    click.echo("助手> ", nl=False)
                elif isinstance(event, Token):
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


@tasks.command("validate")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
def tasks_validate(path: Path) -> None:
    """Check a task YAML file, or every one in a dir: each problem is printed with its file and key."""
    from .tasks import check_task_file

    files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
    if not files:
        raise UserError(f"no .yaml files in {path}")
    bad = 0
    for f in files:
        problems = check_task_file(f)
        for problem in problems:
            click.echo(problem)
        if not problems:
            click.echo(f"ok: {f}")
        bad += bool(problems)
    if bad:
        click.echo(f"{bad} of {len(files)} file(s) have problems", err=True)
        sys.exit(1)


@tasks.command("new")
@click.argument("name")
@click.option("--kind", type=click.Choice(["classify", "generate"]), required=True, help="What the task returns.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write NAME.yaml [default: ALLINONE_TASKS_DIR, else the current dir].",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def tasks_new(name: str, kind: str, directory: Path | None, force: bool) -> None:
    """Write a commented starting file for a new task NAME; edit it, then `allinone tasks validate` it."""
    from .tasks import check_task_file
    from .tasks.templates import starting_file

    directory = directory or _settings().tasks_dir or Path.cwd()
    path = directory / f"{name}.yaml"
    if path.exists() and not force:
        raise UserError(f"{path} exists; use --force to overwrite it")
    text = starting_file(name, kind)  # raises InvalidInput on a bad name
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    problems = check_task_file(path)
    if problems:  # the templates are tested; this guards against an odd name
        raise UserError("; ".join(problems))
    click.echo(f"wrote {path}")
    click.echo(f"try it: allinone run {name} 'some text' --tasks-dir {directory}")


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


def _label_map(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        raw, sep, label = pair.partition("=")
        if not sep:
            raise UserError(f"--label-map expects RAW=LABEL, got '{pair}'")
        out[raw] = label
    return out


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="text", file=sys.stderr, dynamic_ncols=True, disable=None)


def _remember_batch_size(ctx: click.Context, _param: click.Parameter, value: int | None) -> None:
    if value is not None:
        ctx.meta["allinone.batch_size"] = value


def data_options(f: F) -> F:
    f = click.option(
        "--batch-size",
        type=click.IntRange(1, 32),
        default=None,
        expose_value=False,  # read by _settings
        callback=_remember_batch_size,
        help="Texts scored together as one multi-sequence batch; 1 = one at a time [env ALLINONE_BATCH_SIZE; "
        "default 1].",
    )(f)
    f = click.option("--text-field", default="text", show_default=True, help="Field holding the text.")(f)
    f = click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N rows.")(f)
    return f


def labelled_options(f: F) -> F:
    """--label-field and --label-map, for commands that read gold labels."""
    f = click.option(
        "--label-map", multiple=True, metavar="RAW=LABEL", help="Map a file's label to a task label (repeat)."
    )(f)
    f = click.option("--label-field", default="label", show_default=True, help="Field holding the gold label.")(f)
    return f


@cli.command("eval")
@click.argument("task")
@click.argument("file", type=click.Path(path_type=Path))
@data_options
@labelled_options
@click.option(
    "--output", "-o", type=click.Path(path_type=Path), default=None, help="Dir for metrics.json and predictions.jsonl."
)
@model_options
def eval_cmd(
    task: str,
    file: Path,
    text_field: str,
    limit: int | None,
    label_field: str,
    label_map: tuple[str, ...],
    output: Path | None,
    model: str | None,
    tasks_dir: Path | None,
) -> None:
    """Measure a classify TASK on a labelled JSONL/CSV FILE: accuracy, macro-F1, calibration, speed."""
    from .batch import evaluate

    service = _service(model, tasks_dir)
    result = evaluate(service, task, file, text_field, label_field, _label_map(label_map), limit, _progress)
    _print_metrics(result.metrics)
    if output is not None:
        metrics_file, predictions_file = result.save(output)
        click.echo(f"wrote {metrics_file} and {predictions_file}")


def _print_metrics(m: Any) -> None:
    click.echo(f"{m.n} texts in {m.seconds:.1f} s ({m.texts_per_s:.2f} texts/s)")
    click.echo(f"accuracy {m.accuracy:.4f}   macro-F1 {m.macro_f1:.4f}   ECE {m.ece:.4f}")
    click.echo(f"{'label':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for label, v in m.per_label.items():
        click.echo(f"{label:<14}{v['precision']:>10.4f}{v['recall']:>10.4f}{v['f1']:>10.4f}{v['support']:>9}")
    labels = list(m.confusion)
    click.echo("confusion (rows: gold, columns: predicted)")
    click.echo(" " * 14 + "".join(f"{lab:>12}" for lab in labels))
    for gold in labels:
        click.echo(f"{gold:<14}" + "".join(f"{m.confusion[gold][p]:>12}" for p in labels))


@cli.command("classify")
@click.argument("task")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--output",
    "-o",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="Output .jsonl or .csv; rerunning resumes after the rows already in it.",
)
@data_options
@model_options
def classify_cmd(
    task: str, file: Path, out: Path, text_field: str, limit: int | None, model: str | None, tasks_dir: Path | None
) -> None:
    """Label every row of a JSONL/CSV FILE with a classify TASK: each row plus predicted_label and probabilities."""
    from .batch import classify_file

    if out.suffix.lower() not in (".jsonl", ".csv"):
        raise UserError(f"--output must end in .jsonl or .csv: {out}")
    result = classify_file(_service(model, tasks_dir), task, file, out, text_field, limit, _progress)
    if result.already_done:
        click.echo(f"{out}: all {result.total} rows already done")
    else:
        click.echo(f"wrote {result.total} rows to {out}")


@cli.group(cls=_Group)
def sessions() -> None:
    """The chat sessions the service keeps (ALLINONE_HOME/sessions.sqlite3), whichever API key made them: list,
    show, export, delete."""


def _store() -> Any:
    from .sessions import SqliteSessions

    settings = _settings()
    if settings.session_store != "sqlite":  # an empty sqlite file here would wrongly say there are none
        raise UserError(
            f"ALLINONE_SESSION_STORE is {settings.session_store}: the sessions live in the server's memory and end"
            " with it; only the sqlite store can be read from here"
        )
    return SqliteSessions(settings.home / "sessions.sqlite3", settings.session_retention_days)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


# escape sequences (CSI, OSC, two-character ones), then any other C0 or C1 control character but tab and newline
_TERMINAL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)
_NOT_ESCAPED = re.compile(r"[\x7f-\x9f]")  # control characters json.dumps leaves as they are


def _printable(text: str) -> str:
    """Stored text for a terminal: what people typed must not move the cursor, retitle the window or forge a line
    of its own, so control sequences are dropped and continuation lines indented."""
    return _TERMINAL.sub("", text).replace("\n", "\n    ")


def _json_line(data: Any) -> str:
    """JSON with every control character escaped, so that printing it is safe; the data is unchanged."""
    return _NOT_ESCAPED.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(data, ensure_ascii=False))


@sessions.command("list")
def sessions_list() -> None:
    """Every session of every API key, most recently updated first: id, turns, last update, owner (the start of
    its key's hash; `-` for sessions made without a key)."""
    for info in _store().summaries():
        owner = f"key {info.owner[:12]}" if info.owner else "-"
        click.echo(f"{_printable(info.id)}  {info.n_turns:>4} turns  {_when(info.updated)}  {owner}")


@sessions.command("show")
@click.argument("session_id")
def sessions_show(session_id: str) -> None:
    """A session's visible history, one turn per line with its time."""
    for turn in _store().get(session_id).turns:
        click.echo(f"[{_when(turn.at)}] {turn.role}: {_printable(turn.content)}")


@sessions.command("export")
@click.argument("session_ids", nargs=-1)
def sessions_export(session_ids: tuple[str, ...]) -> None:
    """Sessions as JSON lines, one object per session (all of them when no id is given)."""
    store = _store()
    for session_id in session_ids or [info.id for info in store.summaries()]:
        session = store.get(session_id)
        turns = [{"role": t.role, "content": t.content, "sentiment": t.sentiment, "at": t.at} for t in session.turns]
        click.echo(_json_line({"session_id": session.id, "turns": turns}))


@sessions.command("delete")
@click.argument("session_id")
def sessions_delete(session_id: str) -> None:
    """Delete a session and its history."""
    from .errors import SessionNotFound

    if not _store().delete(session_id):
        raise SessionNotFound(f"unknown session '{session_id}'")
    click.echo(f"deleted {session_id}")


@cli.command()
@click.option("--host", default=None, help="Bind address [env ALLINONE_HOST; default 127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port [env ALLINONE_PORT; default 8000].")
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="Log level [env ALLINONE_LOG_LEVEL; default INFO].",
)
@click.option(
    "--log-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Request log, JSON lines [env ALLINONE_LOG_FILE; default stderr].",
)
@model_options
def serve(
    host: str | None,
    port: int | None,
    log_level: str | None,
    log_file: Path | None,
    model: str | None,
    tasks_dir: Path | None,
) -> None:
    """Serve every task over HTTP: the web page at /, the API under /v1, docs at /docs."""
    import uvicorn

    from .server import create_app
    from .service import TaskService

    level = log_level.upper() if log_level else None
    settings = _settings(host=host, port=port, log_level=level, log_file=log_file, model=model, tasks_dir=tasks_dir)
    if not settings.loopback and not settings.api_keys:
        click.echo(
            f"warning: listening on {settings.host}, reachable from other machines; the API has no authentication"
            " (set ALLINONE_API_KEYS).",
            err=True,
        )
    service = TaskService(settings)
    click.echo("loading the model…", err=True)
    service.engine  # load before serving, so a bad model is a one-line error  # noqa: B018
    click.echo(f"serving on http://{settings.host}:{settings.port}  (page /, API docs /docs)", err=True)
    # SIGTERM: uvicorn stops accepting, lets requests in flight finish (then cuts them), runs the app's
    # shutdown (the session store is closed), and re-raises the signal; a handler of ours makes that exit 0
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.run(
            create_app(settings, service),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            access_log=False,  # the app writes one JSON line per request
            timeout_graceful_shutdown=settings.shutdown_timeout,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)


@cli.command("train-head")
@click.argument("task")
@click.argument("file", type=click.Path(path_type=Path))
@data_options
@labelled_options
@click.option(
    "--l2", type=click.FloatRange(0), default=300.0, show_default=True, help="L2 penalty (on standardized features)."
)
@click.option(
    "--probe-layer",
    type=click.IntRange(0),
    default=None,
    help="Also use the mean hidden state after this transformer layer over the text's tokens "
    "(default: only the final hidden state at the answer position).",
)
@click.option(
    "--exclude",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Skip texts that also appear in this file, e.g. the dev/test sets (repeat).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    required=True,
    help="Head file to write; point the task's `head:` key at it.",
)
@model_options
def train_head_cmd(
    task: str,
    file: Path,
    text_field: str,
    limit: int | None,
    label_field: str,
    label_map: tuple[str, ...],
    l2: float,
    probe_layer: int | None,
    exclude: tuple[Path, ...],
    output: Path,
    model: str | None,
    tasks_dir: Path | None,
) -> None:
    """Train a classify TASK's optional linear head on a labelled JSONL/CSV FILE."""
    from .batch import train_head_on_file

    service = _service(model, tasks_dir, probe_layer)
    head = train_head_on_file(
        service, task, file, output, text_field, label_field, _label_map(label_map), limit, exclude, l2, _progress
    )
    n, accuracy = head.info["n_train"], head.info["train_accuracy"]
    click.echo(f"trained on {n} texts (train accuracy {accuracy:.4f}); wrote {output}")
    click.echo(f"use it: add `head: {output.name}` to {task}.yaml, next to the file")


def main() -> None:
    cli(prog_name="allinone")
