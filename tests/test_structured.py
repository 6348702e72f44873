"""Structured output: the supported JSON Schema subset, its grammar, and parsing the model's reply."""

from __future__ import annotations

from typing import Any

import pytest

from allinone.errors import OutputInvalid
from allinone.structured import check_schema, parse_output, schema_to_gbnf, validate

KEYWORDS: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "maxItems": 3,
    "uniqueItems": True,
    "items": {"type": "string", "minLength": 1, "maxLength": 8},
}
OBJECT: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string", "maxLength": 20}, "level": {"enum": ["low", "high"]}},
    "required": ["answer"],
}


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "array", "items": {"type": "string", "maxLength": 5}}, "maxItems is required"),
        ({"type": "string"}, "maxLength is required"),
        ({"type": "string", "maxLength": 5, "pattern": "a+"}, "unsupported keyword"),
        ({"type": "object", "properties": {}}, "non-empty `properties`"),
        ({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["b"]}, "unknown properties"),
        ({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": True}, "only be false"),
        ({"type": "tuple"}, "type must be one of"),
        ({"enum": []}, "non-empty list"),
    ],
)
def test_unsupported_or_unbounded_schemas_are_rejected_with_the_path(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_schema(schema)


def test_nested_problem_names_its_path() -> None:
    bad = {"type": "object", "properties": {"tags": {"type": "array", "maxItems": 3, "items": {"type": "string"}}}}
    with pytest.raises(ValueError, match=r"properties\.tags\.items: maxLength"):
        check_schema(bad)


def test_grammar_bounds_the_array_and_forbids_raw_control_characters() -> None:
    check_schema(KEYWORDS)
    gbnf = schema_to_gbnf(KEYWORDS)
    assert gbnf.count('"," space item') == 2  # at most 3 items
    assert 'char ::= [^"\\\\\\x7F\\x00-\\x1F]' in gbnf
    assert 'item ::= "\\"" char-first' in gbnf  # a non-empty string starts with a visible character
    assert "char-first ::= [^" in gbnf and "\\x00-\\x20" in gbnf
    assert "root ::=" in schema_to_gbnf(OBJECT)


def test_valid_reply_is_parsed_stripped_and_deduplicated() -> None:
    assert parse_output(KEYWORDS, '[ "北京", " 颐和园", "北京" ]') == ["北京", "颐和园"]
    assert parse_output(OBJECT, '{"answer": "yes", "level": "high"}') == {"answer": "yes", "level": "high"}


@pytest.mark.parametrize(
    ("text", "finish", "message"),
    [
        ('["a", "b"', "length", "not complete JSON.*max_tokens"),
        ("not json", "stop", "not complete JSON"),
        ('["a", "b", "c", "d"]', "stop", "4 items"),
        ('[" "]', "stop", "length 0"),
        ('["toolongword"]', "stop", "length 11"),
        ("[1]", "stop", "expected string"),
    ],
)
def test_a_reply_that_is_not_the_declared_shape_is_an_error_never_returned(
    text: str, finish: str, message: str
) -> None:
    with pytest.raises(OutputInvalid, match=message):
        parse_output(KEYWORDS, text, finish)


def test_validate_reports_missing_unexpected_and_wrong_enum() -> None:
    problems = validate(OBJECT, {"level": "mid", "extra": 1})
    assert any("missing 'answer'" in p for p in problems)
    assert any("unexpected 'extra'" in p for p in problems)
    assert any("$.level" in p for p in problems)
    assert validate({"type": "integer"}, True) == ["$: expected integer"]
