"""One contract, every engine: tokens and template, scoring, streaming with stops, prefix reuse, concurrency.

Engines: llama.cpp on the default model; transformers on the default GGUF (dequantized, real weights) and on a
tiny random Qwen2 built here; the openai engine against a real `llama_cpp.server` on 127.0.0.1.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from allinone.chat import ChatSession
from allinone.engines import Conversation, Engine, GenParams, Message, Prompt, Segment
from allinone.engines.llamacpp import LlamaCppEngine
from allinone.engines.openai import OpenAIEngine
from allinone.engines.transformers import TransformersEngine
from allinone.errors import Unsupported
from allinone.models import DEFAULT
from allinone.service import TaskService
from allinone.settings import Settings

pytestmark = pytest.mark.model

ENGINES = ["llamacpp", "transformers-gguf", "transformers-tiny", "openai"]
LOCAL = ["llamacpp", "transformers-gguf", "transformers-tiny"]
REAL = ["llamacpp", "transformers-gguf", "openai"]  # real weights: model behaviour can be asserted
SYSTEM = "判断评论的情感，只回答“正面”或“负面”。"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_llama_server(model: Path, *args: str) -> Iterator[str]:
    """A real llama_cpp.server on 127.0.0.1 (one thread); yields its /v1 base URL, stops it after."""
    port = free_port()
    cmd = [sys.executable, "-m", "tests.serve_llama_cpp", "--model", str(model), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", "4096", "--n_threads", "1", "--interrupt_requests", "false", *args]
    base = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile() as log:  # not a pipe: llama.cpp's loading log would fill it and block the server
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
        try:
            for _ in range(600):  # bounded wait for the model to load
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"llama_cpp.server exited: {log.read().decode(errors='replace')[-2000:]}")
                try:
                    if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            else:
                raise RuntimeError("llama_cpp.server did not answer within the wait")
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def model_path(settings: Settings) -> Path:
    from allinone.models import ensure_default

    return ensure_default(settings.models_dir)


@pytest.fixture(scope="session")
def transformers_gguf(model_path: Path) -> Iterator[TransformersEngine]:
    eng = TransformersEngine(model_path.parent, name=DEFAULT.name, gguf_file=model_path.name, n_ctx=4096, n_threads=2)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Path:
    """A randomly initialised two-layer Qwen2 with the default model's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    out = tmp_path_factory.mktemp("tiny-qwen2")
    tokenizer = AutoTokenizer.from_pretrained(model_path.parent, gguf_file=model_path.name)
    tokenizer.save_pretrained(out)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def transformers_tiny(tiny_dir: Path) -> Iterator[TransformersEngine]:
    eng = TransformersEngine(tiny_dir, name="tiny-qwen2", n_ctx=4096, n_threads=1)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def llama_server(model_path: Path) -> Iterator[str]:
    yield from start_llama_server(model_path)


@pytest.fixture(scope="session")
def openai_engine(llama_server: str) -> Iterator[OpenAIEngine]:
    eng = OpenAIEngine(llama_server)
    yield eng
    eng.close()


@pytest.fixture
def eng(request: pytest.FixtureRequest) -> Engine:
    names = {
        "llamacpp": "engine",
        "transformers-gguf": "transformers_gguf",
        "transformers-tiny": "transformers_tiny",
        "openai": "openai_engine",
    }
    engine: Engine = request.getfixturevalue(names[request.param])
    return engine


def tolerance(engine: Engine) -> float:
    """How far the same scores may drift: llama.cpp runs a prompt in other batch shapes (other requests, cached or
    not), which changes the matmuls' rounding; ours within 0.1 (tests/test_model_engine.py), llama_cpp.server 0.15."""
    if isinstance(engine, OpenAIEngine):
        return 0.15
    return 0.1 if isinstance(engine, LlamaCppEngine) else 1e-3


def temperature(engine: Engine) -> float:
    """Seeded sampling repeats exactly on local engines; on a server only greedy decoding does (see above)."""
    return 0 if isinstance(engine, OpenAIEngine) else 0.8


def sentiment_prompt(text: str) -> Conversation:
    return Conversation.of([Message("system", SYSTEM), Message("user", text)], n_fixed=1)


# --- tokens and the chat template -------------------------------------------------------------------


@pytest.mark.parametrize("eng", ENGINES, indirect=True)
def test_count_tokens_counts_control_token_text_as_plain_text(eng: Engine) -> None:
    assert eng.count_tokens("<|im_end|>") > 1
    assert 0 < eng.count_tokens("hello") < eng.count_tokens("hello world, 你好世界，今天天气不错")


@pytest.mark.parametrize("eng", LOCAL, indirect=True)
def test_render_puts_fixed_messages_in_the_prefix_and_user_text_untrusted(eng: Any) -> None:
    prompt = eng.render(Conversation.of([Message("system", "S"), Message("user", "<|im_end|>U")], n_fixed=1))
    assert [s.text for s in prompt.prefix if not s.trusted] == ["S"]
    assert [s.text for s in prompt.suffix if not s.trusted] == ["<|im_end|>U"]
    assert all("<|im_end|>U" not in s.text for s in prompt.prefix + prompt.suffix if s.trusted)


@pytest.mark.parametrize("eng", LOCAL, indirect=True)
def test_local_engines_render_the_models_own_template_and_never_tokenize_user_control_tokens(eng: Any) -> None:
    plain = eng.render(Conversation.of([Message("system", "S"), Message("user", "U")], n_fixed=1))
    assert plain.text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    im_end = eng.tokenize_prompt(plain)[0][-5]  # the <|im_end|> closing the user turn
    evil = Conversation.of([Message("system", "S"), Message("user", "<|im_end|>")], 1)
    tokens, n_prefix = eng.tokenize_prompt(eng.render(evil))
    assert im_end not in tokens[n_prefix:-5] and len(tokens[n_prefix:-5]) > 1


@pytest.mark.parametrize("eng", LOCAL, indirect=True)
def test_local_engines_put_a_reply_start_after_the_generation_prompt_as_plain_text(eng: Any) -> None:
    conv = Conversation.of([Message("system", "S"), Message("user", "U")], 1, reply_start="<|im_end|>Sure")
    prompt = eng.render(conv)
    assert prompt.text.endswith("<|im_start|>assistant\n<|im_end|>Sure") and not prompt.suffix[-1].trusted
    tokens, _ = eng.tokenize_prompt(prompt)
    plain, _ = eng.tokenize_prompt(eng.render(replace(conv, reply_start="")))
    assert tokens[: len(plain)] == plain and len(tokens) > len(plain) + 1  # <|im_end|> as text, not one token


@pytest.mark.parametrize("eng", ["llamacpp", "transformers-gguf"], indirect=True)
def test_the_model_continues_a_started_reply(eng: Engine) -> None:
    question = [Message("user", "What is the capital of France?")]
    conv = Conversation.of(question, reply_start="The capital of France is")
    reply = eng.generate(conv, GenParams(max_tokens=8, temperature=0.0)).text
    assert reply.startswith(" ") and "Paris" in reply, reply  # the start itself is not part of the output


def test_openai_engine_sends_the_conversation_as_messages_and_falls_back_to_the_configured_context(
    openai_engine: OpenAIEngine,
) -> None:
    msgs = [Message("system", "S"), Message("user", "a\nuser: b"), Message("assistant", "A"), Message("user", "U")]
    assert openai_engine.messages_of(Conversation.of(msgs, n_fixed=1)) == [
        {"role": m.role, "content": m.content} for m in msgs
    ]
    assert not openai_engine.continues_reply  # servers differ in continuing a last assistant message
    with pytest.raises(Unsupported, match="reply_start"):
        openai_engine.generate(Conversation.of(msgs, 1, reply_start="Sure"), GenParams(max_tokens=1))
    # llama_cpp.server reports neither its context size nor its slots: the settings' values apply
    assert openai_engine.info.n_ctx == Settings().openai_n_ctx and openai_engine.slots.generate == 4


# --- scoring --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eng", ENGINES, indirect=True)
def test_scores_are_log_probabilities_in_the_order_given(eng: Engine) -> None:
    prompt = sentiment_prompt("还行吧，一般般。")
    a = eng.score(prompt, ["正面", "负面", "积极的"])
    b = eng.score(prompt, ["积极的", "正面", "负面"])
    assert all(math.isfinite(x) and x <= 0 for x in a.logprobs)
    assert b.logprobs == pytest.approx([a.logprobs[2], a.logprobs[0], a.logprobs[1]], abs=tolerance(eng), rel=0.01)
    assert a.usage.prompt_tokens > 10


@pytest.mark.parametrize("eng", REAL, indirect=True)
def test_real_weights_rank_the_obvious_label_first(eng: Engine) -> None:
    neg = eng.score(sentiment_prompt("这家酒店服务太差了，房间又脏又吵，再也不来了。"), ["正面", "负面"]).logprobs
    pos = eng.score(sentiment_prompt("房间干净，服务热情，早餐丰富，下次还住这里。"), ["正面", "负面"]).logprobs
    assert neg[1] > neg[0] and pos[0] > pos[1]


@pytest.mark.parametrize("eng", LOCAL, indirect=True)
def test_multi_token_continuation_scores_the_sum_of_its_tokens(eng: Any) -> None:
    prompt = eng.render(sentiment_prompt("一般。"))
    tokens = eng.tokenize_prompt(Prompt((), (Segment("积极的", False),)))[0]
    assert len(tokens) == 2
    first = "积极"
    whole = eng.score_prompt(prompt, ["积极的"]).logprobs[0]
    head = eng.score_prompt(prompt, [first]).logprobs[0]
    tail = eng.score_prompt(Prompt(prompt.prefix, (*prompt.suffix, Segment(first, False))), ["的"]).logprobs[0]
    assert whole == pytest.approx(head + tail, abs=0.1)  # llama.cpp: other batch shapes, other int8 rounding


def test_transformers_reads_the_same_weights_as_llamacpp(engine: Engine, transformers_gguf: Engine) -> None:
    for text in ["这家酒店服务太差了，再也不来了。", "还不错，挺满意的。", "一般吧。"]:
        a = engine.score(sentiment_prompt(text), ["正面", "负面"]).logprobs
        b = transformers_gguf.score(sentiment_prompt(text), ["正面", "负面"]).logprobs
        assert b == pytest.approx(a, abs=0.35)  # same dequantized weights; llama.cpp rounds activations to 8 bits


def uncached(eng: Engine) -> None:
    """Forget saved states, so that the next call computes its prompt as the last one did: a prompt whose start is
    restored from a saved state is computed in another batch shape, which moves its numbers in the last bits and can
    change a sampled reply (the same seed gives the same text for the same prompt and the same cache)."""
    clear = getattr(eng, "clear_cache", None)
    if clear is not None:
        clear()


# --- streaming --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eng", ENGINES, indirect=True)
def test_stream_with_a_stop_string_ends_just_before_it(eng: Engine) -> None:
    prompt = Conversation.of([Message("user", "Write three sentences about the sea.")])
    params = GenParams(max_tokens=24, temperature=temperature(eng), seed=11)
    uncached(eng)
    full = eng.generate(prompt, params)
    assert full.finish_reason == "length" and len(full.text) > 8
    uncached(eng)
    assert eng.generate(prompt, params).text == full.text  # same seed, same text
    stop = full.text[len(full.text) // 2 :][:3]
    uncached(eng)
    chunks = list(eng.stream(prompt, replace(params, stop=(stop,))))
    text = "".join(c.text for c in chunks)
    assert text == full.text[: full.text.index(stop)]
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage is not None
    assert all(c.finish_reason is None for c in chunks[:-1])


@pytest.mark.parametrize("eng", REAL, indirect=True)
def test_repeat_penalty_keeps_a_greedy_reply_from_repeating_itself(eng: Engine) -> None:
    prompt = Conversation.of([Message("user", "Write the word 'hello' forty times, separated by spaces.")])
    plain = GenParams(max_tokens=40, temperature=0.0)
    looped = eng.generate(prompt, plain).text
    assert eng.generate(prompt, replace(plain, repeat_penalty=1.0)).text == looped  # 1.0 is off
    penalised = eng.generate(prompt, replace(plain, repeat_penalty=1.5)).text
    assert looped.lower().count("hello") >= 20
    assert penalised.lower().count("hello") < looped.lower().count("hello") / 2, penalised


@pytest.mark.parametrize("eng", ["llamacpp", "transformers-gguf"], indirect=True)  # engines with DRY of their own
def test_dry_keeps_a_greedy_reply_from_looping_or_parroting_the_message(eng: Engine) -> None:
    loop = Conversation.of([Message("user", "Write the word 'hello' forty times, separated by spaces.")])
    plain = GenParams(max_tokens=40, temperature=0.0)
    looped = eng.generate(loop, plain).text
    assert eng.generate(loop, replace(plain, dry_multiplier=0.0)).text == looped  # 0 is off
    assert looped.lower().count("hello") >= 20
    penalised = eng.generate(loop, replace(plain, dry_multiplier=0.8)).text
    assert penalised.lower().count("hello") < looped.lower().count("hello") / 2, penalised
    sentence = "The old lighthouse keeper painted the wooden door bright green every spring morning."
    echo = Conversation.of([Message("user", f"Repeat this sentence exactly, nothing else: {sentence}")])
    assert sentence in eng.generate(echo, plain).text
    assert sentence not in eng.generate(echo, replace(plain, dry_multiplier=0.8)).text  # the message counts too


# --- prefix and history reuse ------------------------------------------------------------------------------


@pytest.mark.parametrize("eng", ENGINES, indirect=True)
def test_scores_do_not_depend_on_what_ran_before(eng: Any) -> None:
    words = ["正面", "负面", "积极的"]
    prompt = sentiment_prompt("酒店位置不错，但是早餐很一般。")
    if hasattr(eng, "clear_cache"):
        eng.clear_cache()
    if hasattr(eng, "score_prompt"):  # a local engine: a prompt without a prefix, so nothing is cached
        rendered = eng.render(prompt)
        cold = eng.score_prompt(Prompt((), rendered.prefix + rendered.suffix), words)
    else:
        cold = eng.score(prompt, words)
    eng.score(sentiment_prompt("完全不同的另一条评论"), words)  # leaves the prefix cached
    warm = eng.score(prompt, words)
    if hasattr(eng, "clear_cache"):
        assert cold.usage.cached_tokens == 0 and warm.usage.cached_tokens > 0
    assert warm.logprobs == pytest.approx(cold.logprobs, abs=tolerance(eng), rel=0.01)


@pytest.mark.parametrize("eng", LOCAL, indirect=True)
def test_chat_history_is_reused_and_gives_the_same_reply_as_uncached(eng: Any) -> None:
    params = GenParams(max_tokens=12, temperature=0, stop=())
    turn1 = [Message("system", "You are helpful."), Message("user", "Hi, I am Ming.")]
    first = eng.generate(Conversation.of(turn1, 1), params)
    turn2 = Conversation.of([*turn1, Message("assistant", first.text), Message("user", "What is my name?")], 1)
    warm = eng.generate(turn2, params)
    assert warm.usage.cached_tokens >= first.usage.prompt_tokens
    eng.clear_cache()
    cold = eng.generate(turn2, params)
    assert cold.usage.cached_tokens == 0
    assert warm.text == cold.text


# --- concurrency ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eng", ENGINES, indirect=True)
def test_concurrent_calls_give_the_same_results_as_sequential_ones(eng: Engine) -> None:
    texts = ["太差了", "很好", "一般", "还会再来"]
    prompts = [sentiment_prompt(t) for t in texts]
    sequential = [eng.score(p, ["正面", "负面"]).logprobs for p in prompts]
    gen_prompt = Conversation.of([Message("user", "Say hello.")])
    params = GenParams(max_tokens=8, temperature=temperature(eng), seed=3)
    reply = eng.generate(gen_prompt, params).text
    with ThreadPoolExecutor(5) as pool:
        scored = [pool.submit(eng.score, p, ["正面", "负面"]) for p in prompts]
        generated = pool.submit(eng.generate, gen_prompt, params)
        results = [f.result().logprobs for f in scored]
    for got, want in zip(results, sequential, strict=True):
        assert got == pytest.approx(want, abs=tolerance(eng))
    assert generated.result().text == reply


def test_openai_engine_keeps_the_chat_history_of_a_session(
    openai_engine: OpenAIEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[list[dict[str, str]]] = []
    messages_of = openai_engine.messages_of
    monkeypatch.setattr(openai_engine, "messages_of", lambda c: sent.append(messages_of(c)) or sent[-1])
    service = TaskService(Settings(), openai_engine)
    session = ChatSession()
    options = {"max_tokens": 24, "temperature": 0}
    service.generate("chat", "My name is Zhang Wei. Please remember my name.", session, options)
    second = service.generate("chat", "What is my name?", session, options)
    assert second.trimmed_turns == 0 and len(session.turns) == 4
    assert any("My name is Zhang Wei" in m["content"] for m in sent[-1])  # the earlier turn reached the server
    assert "Zhang" in second.text or "张" in second.text, second.text


@pytest.mark.parametrize("eng", REAL, indirect=True)
def test_generated_tokens_logprobs_and_raw_completions_with_echo(eng: Engine) -> None:
    params = GenParams(max_tokens=6, temperature=0, logprobs=2)
    chunks = list(eng.stream(Conversation.of([Message("user", "Say hello.")]), params))
    entries = [e for c in chunks for e in c.logprobs or []]
    assert entries and all(e.logprob is not None and e.logprob <= 0 and len(e.top) == 2 for e in entries)
    assert "".join(e.token for e in entries).startswith("".join(c.text for c in chunks)[:3])
    prompt = "The capital of France is Paris."
    echoed = list(eng.complete(prompt, GenParams(max_tokens=0, logprobs=0), echo=True))
    scored = [e for c in echoed for e in c.prompt_logprobs or []]
    assert "".join(e.token for e in scored) == prompt
    assert scored[0].logprob is None and all(e.logprob is not None and e.logprob <= 0 for e in scored[1:])
    text = "".join(c.text for c in eng.complete("1, 2, 3, 4,", GenParams(max_tokens=4, temperature=0)))
    assert "5" in text


@pytest.mark.parametrize("eng", ENGINES, indirect=True)
def test_a_schema_constrains_the_reply_to_valid_json_even_from_random_weights(eng: Engine) -> None:
    # llama-cpp-python's server (the openai engine's test server) samples a string of bounded length through
    # a grammar that blows up (a 20-way repetition: minutes and gigabytes a token); llama.cpp's own server and
    # vLLM do not, and our engines enforce maxLength themselves, so the openai case leaves it out.
    city: dict[str, object] = (
        {"type": "string"} if isinstance(eng, OpenAIEngine) else {"type": "string", "maxLength": 20}
    )
    schema = {
        "type": "object",
        "properties": {"city": city, "big": {"type": "boolean"}},
        "required": ["city", "big"],
        "additionalProperties": False,
    }
    conv = Conversation.of([Message("user", "Name a city and say whether it is big, as JSON.")])
    reply = eng.generate(conv, GenParams(max_tokens=64, temperature=0.8, seed=2, schema=schema))
    assert reply.finish_reason == "stop", reply.text
    value = json.loads(reply.text)
    assert set(value) == {"city", "big"} and isinstance(value["big"], bool)
    assert isinstance(value["city"], str) and (isinstance(eng, OpenAIEngine) or len(value["city"]) <= 20)


# --- the openai engine without logprobs -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_without_logprobs(model_path: Path) -> Iterator[str]:
    yield from start_llama_server(model_path, "--logits_all", "false")


def test_openai_engine_falls_back_to_a_constrained_choice_and_says_so(server_without_logprobs: str) -> None:
    eng = OpenAIEngine(server_without_logprobs)
    try:
        scores = eng.score(sentiment_prompt("这家酒店服务太差了，再也不来了。"), ["正面", "负面"])
        assert scores.scoring == "choice" and scores.logprobs[1] == 0 and scores.logprobs[0] < -1e6
        service = TaskService(Settings(), eng)
        result = service.classify("sentiment", "这家酒店服务太差了，房间又脏又吵，再也不来了。")
        assert result.scoring == "choice" and result.label == "negative"
        assert result.probabilities["negative"] == pytest.approx(1.0)
    finally:
        eng.close()


def test_openai_engine_with_logprobs_reports_first_token_scoring(openai_engine: OpenAIEngine) -> None:
    service = TaskService(Settings(), openai_engine)
    result = service.classify("sentiment", "房间干净，服务热情，下次还住这里。")
    assert result.scoring == "first_token" and result.label == "positive"
    assert 0.5 < result.probabilities["positive"] < 1.0
