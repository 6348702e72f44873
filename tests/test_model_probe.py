"""Hidden-state probe features on the real default model: the mean of a middle layer over the text's tokens."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from allinone.engines.llamacpp import LlamaCppEngine
from allinone.errors import ModelError
from allinone.models import ensure_default
from allinone.settings import Settings
from allinone.tasks import load_tasks

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def probed(settings: Settings) -> Iterator[LlamaCppEngine]:
    eng = LlamaCppEngine(ensure_default(settings.models_dir), name="default", n_ctx=2048, probe_layer=12)
    yield eng
    eng.close()


def _prompt(engine: LlamaCppEngine, text: str) -> object:
    task = load_tasks()["sentiment"]
    fixed = task.fixed_messages()
    return engine.render([*fixed, task.user_message(text)], len(fixed))


def test_probe_features_come_from_the_same_pass_and_leave_the_scores_unchanged(
    probed: LlamaCppEngine, engine: LlamaCppEngine
) -> None:
    words = ["正面", "负面"]
    good, bad = "房间干净，服务热情，下次还来。", "太吵了，一晚上没睡好，差评。"
    a = probed.score(_prompt(probed, good), words, hidden=True)  # type: ignore[arg-type]
    b = probed.score(_prompt(probed, bad), words, hidden=True)  # type: ignore[arg-type]
    assert a.hidden is not None and b.hidden is not None
    assert len(a.hidden) == 2 * 896 and np.isfinite(a.hidden).all()  # layer-12 mean, then the final state
    final = engine.score(_prompt(engine, good), words, hidden=True).hidden  # type: ignore[arg-type]
    assert a.hidden[896:] == final
    assert np.linalg.norm(np.subtract(a.hidden, b.hidden)) > 1.0  # features depend on the text
    # the label scores are those of an engine without the probe (same batches, bit-identical)
    assert a.logprobs == engine.score(_prompt(engine, good), words).logprobs  # type: ignore[arg-type]
    # and the features do not depend on what was cached: the same again after dropping every state
    probed.clear_cache()
    again = probed.score(_prompt(probed, good), words, hidden=True)  # type: ignore[arg-type]
    assert again.hidden == a.hidden and again.logprobs == a.logprobs
    # a pass that does not ask for them does not read them
    assert probed.score(_prompt(probed, good), words).hidden is None


def test_an_impossible_probe_layer_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(ModelError, match=r"probe layer must be in 0\.\.22"):
        LlamaCppEngine(ensure_default(settings.models_dir), name="default", n_ctx=512, probe_layer=23)
