"""Structured output: a bounded subset of JSON Schema, its llama.cpp grammar, and checking the parsed result.

The grammar makes the model's output valid JSON of the schema's shape; parsing and validating it again
here catches what a grammar cannot (a reply cut by max_tokens, uniqueItems) so a caller never gets
invalid JSON: it gets the parsed value or an `OutputInvalid` error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import OutputInvalid

__all__ = ["check_schema", "parse_output", "schema_to_gbnf", "validate"]

_CHAR_FIRST = r'char-first ::= [^"\\\x7F\x00-\x20\u00A0\u3000] | "\\" ["\\/]'
_COMMON = {"type", "description", "title", "examples", "default"}
_KEYWORDS = {
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "minItems", "maxItems", "uniqueItems"},
    "string": {"minLength", "maxLength"},
    "integer": set(),
    "number": set(),
    "boolean": set(),
    "null": set(),
}
_PY_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def check_schema(schema: Any, path: str = "") -> None:
    """Raise ValueError naming the first unsupported or unbounded part of the schema.

    Supported: object (properties, required, additionalProperties: false), array (items, minItems,
    maxItems, uniqueItems), string (minLength, maxLength), integer, number, boolean, null, enum, const.
    Every array needs maxItems and every free string maxLength, so generation always ends.
    """
    where = path or "(root)"
    if not isinstance(schema, dict):
        raise ValueError(f"{where}: a schema must be a mapping")
    if "enum" in schema or "const" in schema:
        values = schema.get("enum", [schema.get("const")])
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: enum must be a non-empty list")
        extra = set(schema) - _COMMON - {"enum", "const"}
        if extra:
            raise ValueError(f"{where}: unsupported keyword(s) {sorted(extra)} next to enum/const")
        return
    kind = schema.get("type")
    if kind not in _KEYWORDS:
        raise ValueError(f"{where}: type must be one of {sorted(_KEYWORDS)} (or use enum/const), got {kind!r}")
    extra = set(schema) - _COMMON - _KEYWORDS[kind]
    if extra:
        raise ValueError(f"{where}: unsupported keyword(s) for type {kind}: {sorted(extra)}")
    if kind == "object":
        _check_object(schema, path)
    elif kind == "array":
        _check_bounds(schema, where, "minItems", "maxItems", 1000)
        check_schema(schema.get("items"), f"{path}.items" if path else "items")
    elif kind == "string":
        _check_bounds(schema, where, "minLength", "maxLength", 10_000)


def _check_object(schema: dict[str, Any], path: str) -> None:
    props = schema.get("properties")
    if not isinstance(props, dict) or not props:
        raise ValueError(f"{path or '(root)'}: an object needs non-empty `properties`")
    if schema.get("additionalProperties", False) is not False:
        raise ValueError(f"{path or '(root)'}: additionalProperties may only be false")
    unknown = [r for r in schema.get("required", []) if r not in props]
    if unknown:
        raise ValueError(f"{path or '(root)'}: required names unknown properties {unknown}")
    for name, sub in props.items():
        check_schema(sub, f"{path}.properties.{name}" if path else f"properties.{name}")


def _check_bounds(schema: dict[str, Any], where: str, low: str, high: str, limit: int) -> None:
    lo, hi = schema.get(low, 0), schema.get(high)
    if not isinstance(hi, int) or isinstance(hi, bool) or not 1 <= hi <= limit:
        raise ValueError(f"{where}: {high} is required (1-{limit}) so that generation always ends")
    if not isinstance(lo, int) or isinstance(lo, bool) or not 0 <= lo <= hi:
        raise ValueError(f"{where}: {low} must be a whole number from 0 to {high}")


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """The llama.cpp grammar (GBNF) of a checked schema, via llama-cpp-python's converter."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf: str = json_schema_to_gbnf(json.dumps(schema))
    # JSON strings may not hold raw control characters; the converter's `char` rule allows them
    gbnf = gbnf.replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]')
    # a string that must not be empty starts with a visible character, so it is never blank once stripped
    gbnf, n = re.subn(r'"\\"" char(?=[ )])', '"\\\\"" char-first', gbnf)
    return gbnf + (f"\n{_CHAR_FIRST}" if n else "")


def validate(schema: dict[str, Any], value: Any, path: str = "$") -> list[str]:
    """Every way `value` breaks the (checked) schema; empty when it conforms."""
    if "const" in schema:
        return [] if value == schema["const"] else [f"{path}: must be {schema['const']!r}"]
    if "enum" in schema:
        return [] if value in schema["enum"] else [f"{path}: must be one of {schema['enum']}"]
    kind = schema["type"]
    if (isinstance(value, bool) and kind in ("integer", "number")) or not isinstance(value, _PY_TYPES[kind]):
        return [f"{path}: expected {kind}"]
    if isinstance(value, str):
        low, high = schema.get("minLength", 0), schema["maxLength"]
        return [] if low <= len(value) <= high else [f"{path}: length {len(value)} outside {low}-{high}"]
    if isinstance(value, list):
        low, high = schema.get("minItems", 0), schema["maxItems"]
        problems = [] if low <= len(value) <= high else [f"{path}: {len(value)} items, outside {low}-{high}"]
        for i, item in enumerate(value):
            problems += validate(schema["items"], item, f"{path}[{i}]")
        return problems
    if isinstance(value, dict):
        problems = [f"{path}: missing {name!r}" for name in schema.get("required", []) if name not in value]
        problems += [f"{path}: unexpected {name!r}" for name in value if name not in schema["properties"]]
        for name, sub in schema["properties"].items():
            if name in value:
                problems += validate(sub, value[name], f"{path}.{name}")
        return problems
    return []


def _normalize(schema: dict[str, Any], value: Any) -> Any:
    """Strip strings; drop repeated items of uniqueItems arrays (a grammar cannot forbid repeats)."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and schema.get("type") == "array":
        items = [_normalize(schema["items"], v) for v in value]
        if schema.get("uniqueItems"):
            items = [v for i, v in enumerate(items) if v not in items[:i]]
        return items
    if isinstance(value, dict) and schema.get("type") == "object":
        return {k: _normalize(schema["properties"].get(k, {}), v) for k, v in value.items()}
    return value


def parse_output(schema: dict[str, Any], text: str, finish_reason: str | None = None) -> Any:
    """The model's output as parsed JSON that conforms to the schema, or OutputInvalid saying why not."""
    try:
        value = _normalize(schema, json.loads(text))
    except json.JSONDecodeError as e:
        cut = " (the reply hit max_tokens; raise it)" if finish_reason == "length" else ""
        raise OutputInvalid(f"the model's output is not complete JSON{cut}: {e.msg} at char {e.pos}") from None
    problems = validate(schema, value)
    if problems:
        raise OutputInvalid(f"the model's output does not match the task's output_schema: {'; '.join(problems[:3])}")
    return value
