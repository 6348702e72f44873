"""The Python API: one object that loads the model once and runs every task, as the CLI and the server do.

from allinone import AllInOne

ai = AllInOne()                                   # the embedded default model
ai.classify("这家酒店服务太差了").label            # 'negative'
ai.generate("summary", long_text, length="short").text
chat = ai.chat()
sentiment, reply = chat.send("今天工作好累")        # the combined flow: sentiment first, then the reply
for piece in chat.stream("谢谢你"): ...            # a Classification, then the reply's text pieces
ai.evaluate("sentiment", Path("dev.jsonl")).metrics.accuracy
ai.classify_file("sentiment", Path("in.csv"), Path("out.csv"))   # resumes after the rows already written
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .chat import ChatSession
from .classify import Classification
from .events import Classified, TaskCall, Token
from .generate import Generated
from .service import TaskService
from .settings import Settings

if TYPE_CHECKING:
    from .batch import Evaluation, FileResult
    from .head import LinearHead

__all__ = ["AllInOne", "Chat"]


class AllInOne:
    """The model and every task. `model`, `engine` and any other `Settings` field may be given; the rest come
    from the environment (ALLINONE_*) and the defaults. The model is loaded here, once."""

    def __init__(self, model: str | None = None, **settings: Any) -> None:
        if model is not None:
            settings["model"] = model
        self.service = TaskService(Settings(**settings))
        self.service.engine  # noqa: B018 - load now, not on the first call

    @property
    def tasks(self) -> list[str]:
        return list(self.service.tasks)

    def classify(self, text: str, task: str = "sentiment", **options: Any) -> Classification:
        """A classify task's label, probabilities and display line for `text`."""
        return self.service.classify(task, text, options)

    def generate(self, task: str, text: str, **options: Any) -> Generated:
        """A generate task's whole reply (`data` holds the parsed JSON of a task with an output schema);
        task options (e.g. `length="short"`) and generation options (`max_tokens`, `temperature`, `seed`...)."""
        return self.service.generate(task, text, options=options)

    def stream(self, task: str, text: str, **options: Any) -> Iterator[str]:
        """A generate task's reply as it is generated."""
        for event in self.service.run(TaskCall(task, text, options=options)):
            if isinstance(event, Token) and event.text:
                yield event.text

    def evaluate(
        self,
        task: str,
        file: Path,
        text_field: str = "text",
        label_field: str = "label",
        label_map: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> Evaluation:
        """A classify task's metrics (accuracy, macro-F1, calibration, speed) and predictions on a labelled
        JSONL/CSV file; `label_map` maps the file's labels to the task's (e.g. {"1": "positive"})."""
        from .batch import evaluate

        return evaluate(self.service, task, file, text_field, label_field, label_map, limit)

    def classify_file(
        self, task: str, file: Path, output: Path, text_field: str = "text", limit: int | None = None
    ) -> FileResult:
        """Label every row of a JSONL/CSV file into `output` (.jsonl or .csv); rerunning resumes."""
        from .batch import classify_file

        return classify_file(self.service, task, file, output, text_field, limit)

    def train_head(
        self,
        task: str,
        file: Path,
        output: Path,
        exclude: Iterable[Path] = (),
        l2: float = 300.0,
        **fields: Any,
    ) -> LinearHead:
        """Train and save a classify task's linear head on a labelled file, minus texts in `exclude` files;
        `fields`: text_field, label_field, label_map, limit as for `evaluate`."""
        from .batch import train_head_on_file

        return train_head_on_file(self.service, task, file, output, exclude=exclude, l2=l2, **fields)

    def chat(self, sentiment: bool = True, task: str = "chat") -> Chat:
        """A new conversation; with `sentiment`, each message gets its sentiment first (the combined flow)."""
        return Chat(self.service, sentiment, task)

    def close(self) -> None:
        self.service.engine.close()

    def __enter__(self) -> AllInOne:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Chat:
    """A multi-turn conversation held in memory (the history as the model sees it, sentiment tags included)."""

    def __init__(self, service: TaskService, sentiment: bool = True, task: str = "chat") -> None:
        self.service, self.sentiment, self.task = service, sentiment, task
        self.session = ChatSession()

    @property
    def history(self) -> list[dict[str, str]]:
        return self.session.history

    def reset(self) -> None:
        self.session.reset()

    def stream(self, text: str, **options: Any) -> Iterator[Classification | str]:
        """The message's Classification first (with `sentiment`), then the reply's text as it is generated; the
        turn is kept once the reply is complete."""
        sentiment = "sentiment" if self.sentiment else None
        for event in self.service.run(TaskCall(self.task, text, None, options, self.session, sentiment)):
            if isinstance(event, Classified):
                yield event.result
            elif isinstance(event, Token) and event.text:
                yield event.text

    def send(self, text: str, **options: Any) -> tuple[Classification | None, str]:
        """The message's sentiment (None without `sentiment`) and the whole reply."""
        result: Classification | None = None
        parts: list[str] = []
        for event in self.stream(text, **options):
            if isinstance(event, Classification):
                result = event
            else:
                parts.append(event)
        return result, "".join(parts)
