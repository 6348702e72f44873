"""The objective checks of chat replies: each one catches its fault and lets a good reply through."""

from __future__ import annotations

import pytest

from allinone.replycheck import CHECKS, check_reply, language_of

GOOD_ZH = "升职加薪真是太棒了，恭喜你！这是你努力的回报，今晚好好庆祝一下吧。"
GOOD_EN = "I'm so sorry about your grandfather. Losing him is hard; be gentle with yourself this week."


def failed(message: str, reply: str, finish: str = "stop") -> tuple[str, ...]:
    return check_reply(message, reply, finish).failed


def test_good_replies_pass_every_check() -> None:
    assert failed("今天升职加薪了，超级开心！", GOOD_ZH) == ()
    assert failed("My grandfather passed away last night.", GOOD_EN) == ()
    assert check_reply("今天升职加薪了", GOOD_ZH).passed


def test_english_words_the_user_used_are_fine_in_a_chinese_reply() -> None:
    reply = "恭喜你！拿到梦想公司的offer真是太棒了，这份offer是你努力的结果。"
    assert "language" not in failed("今天收到了梦想公司的offer，简直不敢相信", reply)
    assert "language" in failed("今天收到了梦想公司的通知，简直不敢相信", reply.replace("offer", "offer letter now"))


def test_message_language_is_the_majority_script() -> None:
    assert language_of("今天收到了offer，好开心") == "zh"
    assert language_of("I love 北京 so much") == "en"


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        ("今天升职加薪了，超级开心！", "Congratulations! You've earned a promotion. Enjoy it."),  # issue 14's first row
        ("我养了十年的狗去世了", "Sadly you lost your dog, 这真的很难过，抱抱你。"),  # an English sentence in Chinese
        ("My flight got cancelled.", "真遗憾，航班取消了。Try to rebook soon."),
    ],
)
def test_a_reply_in_another_language_fails_the_language_check(message: str, reply: str) -> None:
    assert "language" in failed(message, reply)


@pytest.mark.parametrize(
    "reply",
    [
        "作为一个人工智能助手，我不会鼓励或鼓励任何形式的暴力行为。",
        "对不起，我是个AI助手，我不会提供关于个人情感的建议。",
        "As an AI, I don't have feelings, but I hope your day gets better.",
        "I'm sorry, but I cannot help with that request.",
    ],
)
def test_refusal_and_as_an_ai_boilerplate_fails(reply: str) -> None:
    message = "室友总是半夜打游戏吵到我，我该怎么办" if language_of(reply) == "zh" else "My roommate is noisy at night."
    assert "boilerplate" in failed(message, reply)


def test_sympathy_that_mentions_inability_is_not_boilerplate() -> None:
    assert "boilerplate" not in failed("I failed my test.", "I can't imagine how frustrating that must be for you.")


def test_code_and_markdown_fences_fail() -> None:
    assert "code" in failed("Tell me something fun.", "Sure!\n```python\nprint('fun')\n```\nEnjoy it.")
    assert "code" in failed("无聊", "试试这个：\ndef hello():\n    return 1\n希望你开心。")


def test_a_reply_cut_mid_sentence_or_by_the_token_limit_is_incomplete() -> None:
    assert "complete" in failed("我被裁员了", "被裁员真的很难受，你可以先休息几天，然后")
    assert "complete" in failed("我被裁员了", "被裁员真的很难受，先好好休息。", finish="length")
    assert "complete" not in failed("I nailed my interview!", "That's fantastic news 🎉")


def test_length_bounds_in_characters_and_words() -> None:
    assert "length" in failed("我好难过", "抱抱你。")
    assert "length" in failed("I feel lonely.", "Oh no.")
    assert "length" in failed("I feel lonely.", " ".join(["word"] * 200) + ".")


@pytest.mark.parametrize(
    "reply",
    [
        "[情感标签：负面] 抱歉听到这个消息，抱抱你。",
        "情感标签是负面，我很理解你的心情。",
        "【情绪：负面】别难过了，会好起来的。",
    ],
)
def test_a_repeated_sentiment_tag_fails(reply: str) -> None:
    assert "tag" in failed("我今天失恋了，好难过", reply)


def test_repetition_loops_fail() -> None:
    loop = "你要好好休息。你要好好休息。你要好好休息。"
    assert "repetition" in failed("最近总是失眠", loop)
    words = "Take a deep breath and relax. " + "Take a deep breath and rest, take a deep breath and sleep, " * 2
    assert "repetition" in failed("I'm anxious.", words + "okay?")
    assert "repetition" not in failed("最近总是失眠", "失眠真的很磨人。睡前少看手机，试着固定作息，慢慢会好起来的。")


@pytest.mark.parametrize(
    ("message", "reply"),
    [
        # the README's old reply
        ("今天工作好累，老板还批评了我", "工作上辛苦，老板批评了我，是正常的。你已经努力了。"),
        (
            "My manager criticized my report in front of the whole team.",
            "I know, my report in front of the whole team was bad.",
        ),
    ],
)
def test_taking_the_users_role_fails(message: str, reply: str) -> None:
    assert "role" in failed(message, reply)


def test_echoing_the_topic_in_second_person_is_not_taking_the_role() -> None:
    assert "role" not in failed("今天工作好累，老板还批评了我", "被老板批评一定很委屈，你今天辛苦了，早点休息吧。")


def test_every_check_is_named_in_checks() -> None:
    assert set(CHECKS) == {"language", "boilerplate", "code", "complete", "length", "tag", "repetition", "role", "mood"}


@pytest.mark.parametrize(
    ("message", "sentiment", "reply"),
    [
        ("My grandfather passed away last night.", "negative", "Thank you for asking! I'm glad I could help."),
        ("I got laid off today.", "negative", "You're welcome, that's a great feeling."),
        ("感冒三天了还没好，喉咙特别疼", "negative", "太好了，你的喉咙疼确实很严重，多喝水，多休息。"),
        ("My grandfather passed away.", "negative", "That sounds really great, but his death is a big deal for you."),
        ("我考研上岸了！", "positive", "很遗憾听到这个消息，考研真的很辛苦，好好休息一下吧。"),
    ],
)
def test_an_opening_at_odds_with_the_messages_mood_fails(message: str, sentiment: str, reply: str) -> None:
    assert check_reply(message, reply, "stop", sentiment).failed == ("mood",)


def test_the_mood_check_reads_only_the_first_clause_and_needs_the_messages_sentiment() -> None:
    grief = "My grandfather passed away last night."
    kind = "I'm so sorry. He must have been a great man, and you loved him."
    assert check_reply(grief, kind, "stop", "negative").passed
    assert check_reply("今天升职加薪了，超级开心！", GOOD_ZH, "stop", "positive").passed
    thanks = "Thanks a lot! Losing him is hard; be gentle with yourself."  # at odds, but only a mood can say so
    assert check_reply(grief, thanks).passed and check_reply(grief, thanks, "stop", "neutral").passed
    assert check_reply(grief, thanks, "stop", "negative").failed == ("mood",)


def test_a_negated_cheer_or_thanks_for_confiding_is_not_at_odds_with_bad_news() -> None:
    for message, reply in [
        ("我觉得自己在朋友圈里总是被忽略", "被忽略确实很让人不开心。你可以主动约朋友出来聊聊。"),
        ("My coworker keeps taking credit for my ideas.", "That's not very nice. You could talk to your manager."),
        ("My grandfather passed away.", "Thank you for telling me, I'm so sorry. Be gentle with yourself."),
    ]:
        assert "mood" not in check_reply(message, reply, "stop", "negative").failed, reply
