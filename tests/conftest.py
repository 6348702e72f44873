from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from allinone.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Settings of the real default model, cached in the user's ALLINONE_HOME across runs."""
    return Settings(n_ctx=4096)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[object]:
    """The real default model, loaded once for the whole session."""
    from allinone.engines import load_engine

    eng = load_engine(settings)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def service(settings: Settings, engine: object) -> object:
    from allinone.service import TaskService

    return TaskService(settings, engine)  # type: ignore[arg-type]
