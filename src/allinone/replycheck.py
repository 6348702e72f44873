"""Objective checks of a chat reply: language, boilerplate, code, completeness, length, tag, loops, role, mood."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal

from .tasks import cjk_share

__all__ = ["CHECKS", "ReplyCheck", "check_reply", "language_of"]

Language = Literal["zh", "en"]
CHECKS = ("language", "boilerplate", "code", "complete", "length", "tag", "repetition", "role", "mood")

LENGTH = {"zh": (10, 220), "en": (6, 160)}  # characters (zh) or words (en) a caring chat reply takes
_BOILERPLATE = re.compile(
    "|".join(
        [
            r"作为(一个|一名)?(人工智能|AI|ai|语言模型|助手|机器人)",
            r"我(只)?是(一个|个)?(人工智能|AI|ai|语言模型|机器人|聊天机器人)",
            r"(人工智能|AI)助手",
            r"语言模型",
            r"我(不能|无法|不会)(提供|参与|鼓励|回答|帮助|给出)",
            r"(抱歉|对不起)[，,]?\s*我(不能|无法)",
            r"\bas an ai\b",
            r"\bi(?:'m| am) (?:just |only )?an ai\b",
            r"\blanguage model\b",
            r"\bai assistant\b",
            r"\bi (?:cannot|can't|can not|am unable to|'m unable to|am not able to|'m not able to) "
            r"(?:help|provide|assist|give|offer|answer|engage)",
            r"\bi (?:don't|do not) have (?:personal|feelings|emotions)",
        ]
    ),
    re.IGNORECASE,
)
_CODE = re.compile(
    r"```|~~~|^\s*(?:def |class \w+|import \w+|from \w+ import|#include|public static|function\s*\w*\(|"
    r"console\.log|print\(|<\?php|</?\w+>)",
    re.MULTILINE,
)
_TAG = re.compile(
    r"情感标签|情绪标签|[\[【［(（]\s*(?:情感|情绪|心情|用户情绪|sentiment|mood|正面|负面|中性|positive|negative|neutral)"
    r"|\bsentiment (?:tag|label)\b",
    re.IGNORECASE,
)
_END = re.compile(r"[。！？!?.…~～」』”\"')）\]】]\s*$|[\U0001F300-\U0001FAFF\u2600-\u27BF]\s*$")
_SENTENCE = re.compile(r"[^。！？!?.\n]+[。！？!?.\n]?")
_FIRST_PERSON = re.compile(r"\b(?:I|I'm|I've|I'd|I'll|my|me|mine|myself)\b")
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_FIRST_CLAUSE = re.compile(r"^[^，,。！？!?.;；:：\n]*")
# What the first clause of a reply must not say, by the message's sentiment: thanks, congratulations, praise or
# good wishes for bad news ("Thank you for asking!" to a grandfather's death); sympathy for good news
_AT_ODDS = {
    "negative": re.compile(
        r"congrat|thank|welcome|\bglad\b|\bgreat\b|wonderful|awesome|amazing|\bnice\b|\bhappy\b|good (?:job|luck|news)"
        r"|恭喜|谢谢|感谢|不客气|太好了|太棒|真棒|不错|好消息|开心|高兴|祝贺",
        re.IGNORECASE,
    ),
    "positive": re.compile(r"sorry|oh no|condolence|抱歉|遗憾|难过|节哀|伤心", re.IGNORECASE),
}
_NEGATED = re.compile(
    r"(?:不|没|别|\bnot|n't|\bno)(?:\s+(?:very|so|really|too|that))?\s*$", re.IGNORECASE
)  # "not nice", 不开心
_THANKS_FOR_TELLING = re.compile(  # how a listener thanks someone for confiding: fine for bad news
    r"thanks?(?: you)? for (?:sharing|telling|letting me know|trusting|opening up)|谢谢你?(?:愿意)?(?:告诉|分享|信任)",
    re.IGNORECASE,
)


def language_of(text: str) -> Language:
    """zh when most letters are Chinese characters, else en."""
    return "zh" if cjk_share(text) > 0.5 else "en"


def _length(reply: str, lang: Language) -> int:
    if lang == "en":
        return len(_WORD.findall(reply))
    return len([c for c in reply if not c.isspace()])


def _language_ok(reply: str, message: str, lang: Language) -> bool:
    """Chinese: nearly all letters Chinese (English words the user used aside) and no English sentence;
    English: no Chinese at all."""
    if lang == "en":
        return cjk_share(reply) == 0.0
    used = {w.lower() for w in _WORD.findall(message)}
    reply = _WORD.sub(lambda m: "" if m.group().lower() in used else m.group(), reply)
    latin_run = re.search(r"[A-Za-z]+(?:[\s,，']+[A-Za-z]+){2,}", reply)  # three English words in a row
    return cjk_share(reply) >= 0.8 and latin_run is None


def _repeats(reply: str, lang: Language) -> bool:
    """A sentence said twice, or the same stretch of text three times: a loop."""
    sentences = [re.sub(r"\W", "", s).lower() for s in _SENTENCE.findall(reply)]
    said = Counter(s for s in sentences if len(s) >= 6)
    if said and said.most_common(1)[0][1] >= 2:
        return True
    if lang == "en":
        words = [w.lower() for w in _WORD.findall(reply)]
        grams = Counter(tuple(words[i : i + 4]) for i in range(len(words) - 3))
    else:
        text = re.sub(r"\s", "", reply)
        grams = Counter(tuple(text[i : i + 6]) for i in range(len(text) - 5))
    return bool(grams) and grams.most_common(1)[0][1] >= 3


def _takes_users_role(reply: str, message: str, lang: Language) -> bool:
    """The reply repeats a first-person stretch of the user's message as its own words ("老板批评了我")."""
    match = SequenceMatcher(None, message, reply, autojunk=False).find_longest_match()
    copied = message[match.a : match.a + match.size]
    if lang == "zh":
        return len(copied) >= 4 and "我" in copied
    words = _WORD.findall(copied)
    return len(words) >= 4 and _FIRST_PERSON.search(copied) is not None


def _at_odds(reply: str, sentiment: str | None) -> bool:
    """The reply's first clause answers bad news with thanks or cheer, or good news with sympathy."""
    pattern = _AT_ODDS.get(sentiment or "")
    first = _FIRST_CLAUSE.match(reply.strip())
    if pattern is None or first is None:
        return False
    clause = _THANKS_FOR_TELLING.sub("", first.group())
    return any(not _NEGATED.search(clause[: m.start()]) for m in pattern.finditer(clause))


@dataclass(frozen=True)
class ReplyCheck:
    """Which checks a reply failed (empty: it passed every one)."""

    failed: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failed


def check_reply(
    message: str, reply: str, finish_reason: str | None = "stop", sentiment: str | None = None
) -> ReplyCheck:
    """Run every check of CHECKS on the reply to `message`; `finish_reason` "length" means it was cut. `sentiment`
    (positive, negative; None or neutral: no mood check) is the message's own, as whoever wrote it means it."""
    lang = language_of(message)
    low, high = LENGTH[lang]
    results = {
        "language": _language_ok(reply, message, lang),
        "boilerplate": _BOILERPLATE.search(reply) is None,
        "code": _CODE.search(reply) is None,
        "complete": finish_reason != "length" and _END.search(reply) is not None,
        "length": low <= _length(reply, lang) <= high,
        "tag": _TAG.search(reply) is None,
        "repetition": not _repeats(reply, lang),
        "role": not _takes_users_role(reply, message, lang),
        "mood": not _at_odds(reply, sentiment),
    }
    return ReplyCheck(tuple(name for name in CHECKS if not results[name]))
