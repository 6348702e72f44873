"""DRY ("don't repeat yourself") repetition penalties, as llama.cpp's DRY sampler computes them, for engines
without one (transformers). The llama.cpp engine uses llama.cpp's own sampler with the same settings."""

from __future__ import annotations

from collections.abc import Collection, Sequence

BASE = 1.75  # llama.cpp's defaults (common_params_sampling)
ALLOWED_LENGTH = 2
LAST_N = 256  # tokens of the request and reply looked back over
BREAKERS = ("\n", ":", '"', "*")  # a repeat does not carry across a token holding one of these
_MAX_EXPONENT = 40  # keeps the penalty finite however long the repeat


def server_fields(multiplier: float) -> dict[str, object]:
    """The same DRY as a llama.cpp server's request fields. Given the multiplier alone, the server would use its own
    look-back (the whole context) instead of LAST_N."""
    return {
        "dry_multiplier": multiplier,
        "dry_base": BASE,
        "dry_allowed_length": ALLOWED_LENGTH,
        "dry_penalty_last_n": LAST_N,
        "dry_sequence_breakers": list(BREAKERS),
    }


def penalties(
    context: Sequence[int], multiplier: float, breakers: Collection[int] = (), last_n: int = LAST_N
) -> dict[int, float]:
    """What to subtract from each next token's logit: where the context's last tokens also occur earlier, the
    token that followed them there would extend the repeat. A repeat of `length` tokens (at least
    ALLOWED_LENGTH, not crossing a breaker) costs that token `multiplier * BASE ** (length - ALLOWED_LENGTH)`."""
    ctx = list(context[-last_n:]) if last_n > 0 else []
    n = len(ctx)
    out: dict[int, float] = {}
    if multiplier <= 0 or n < 2:
        return out
    ending = 0  # the context's ending that may repeat: back to the last breaker
    while ending < n and ctx[n - 1 - ending] not in breakers:
        ending += 1
    for j in range(n - 1):  # an earlier occurrence ends at j; ctx[j + 1] followed it
        length = 0
        while length < ending and length <= j and ctx[j - length] == ctx[n - 1 - length]:
            length += 1
        token = ctx[j + 1]
        if length >= ALLOWED_LENGTH and token not in breakers:  # a breaker ends a repeat; it never extends one
            cost = multiplier * BASE ** min(length - ALLOWED_LENGTH, _MAX_EXPONENT)
            out[token] = max(out.get(token, 0.0), cost)
    return out
