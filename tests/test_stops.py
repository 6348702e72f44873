from __future__ import annotations

from allinone.engines.stops import StopBuffer


def feed(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    buf = StopBuffer(stops)
    out = "".join(buf.push(p) for p in pieces)
    return out + buf.flush(), buf.stopped


def test_stop_string_split_across_pieces_is_cut() -> None:
    assert feed(["END"], ["hello E", "N", "D more"]) == ("hello ", True)


def test_partial_match_that_does_not_complete_is_released() -> None:
    assert feed(["END"], ["hello E", "N", "x"]) == ("hello ENx", False)


def test_earliest_of_several_stops_wins() -> None:
    assert feed(["。", "\n"], ["第一句\n第二句。"]) == ("第一句", True)


def test_no_stops_passes_through() -> None:
    assert feed([], ["a", "b"]) == ("ab", False)
