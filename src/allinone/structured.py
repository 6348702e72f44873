"""Structured output: subsets of JSON Schema, their llama.cpp grammar, and checking the parsed result.

Two subsets. A task's `output_schema` (check_schema) is bounded: every array has maxItems and every free
string maxLength, so generation always ends. A request's `response_format` schema (check_request_schema) is
what OpenAI clients send (pydantic models: `$defs` and `$ref`, `anyOf` for optional fields, unbounded
strings; `max_tokens` bounds the reply). Either way the grammar makes the output valid JSON of the schema's
shape; parsing and validating it again here catches what a grammar cannot (a reply cut by max_tokens,
uniqueItems), so a caller never gets invalid JSON: it gets the parsed value or an `OutputInvalid` error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import OutputInvalid

__all__ = ["JSON_OBJECT", "check_request_schema", "check_schema", "parse_output", "schema_to_gbnf", "validate"]

JSON_OBJECT: dict[str, Any] = {"type": "object"}  # response_format json_object: any JSON object
_ANNOTATIONS = {"description", "title", "examples", "default", "$schema", "$id", "$comment"}
_REQUEST_KEYWORDS = {
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "minItems", "maxItems"},
    "string": {"minLength", "maxLength"},
    "integer": set(),
    "number": set(),
    "boolean": set(),
    "null": set(),
}

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


class UnsupportedSchema(ValueError):
    """A schema keyword outside the subset constrained decoding enforces."""


def check_request_schema(schema: Any, path: str = "", root: Any = None) -> None:
    """Raise UnsupportedSchema naming the first keyword of a request's JSON Schema that constrained decoding
    would not enforce (so nothing is silently ignored).

    Supported: type (one or a list), object (properties, required, additionalProperties false), array (items,
    minItems, maxItems), string (minLength, maxLength), integer, number, boolean, null, enum, const, anyOf, and
    local `$ref`s into `$defs` / `definitions`; annotations (title, description, examples, default) are kept.
    """
    root = schema if root is None else root
    where = path or "(root)"
    if not isinstance(schema, dict):
        raise UnsupportedSchema(f"{where}: a schema must be an object")
    if path == "":
        for defs in ("$defs", "definitions"):
            for name, sub in (schema.get(defs) or {}).items():
                check_request_schema(sub, f"{defs}.{name}", root)
    keys = set(schema) - _ANNOTATIONS - ({"$defs", "definitions"} if path == "" else set())
    _only(keys, {"type", "$ref", "anyOf", "enum", "const"}.union(*_REQUEST_KEYWORDS.values()), where)
    if "$ref" in schema:
        _resolve(root, schema["$ref"], where)
        _only(keys, {"$ref"}, where)
        return
    if "anyOf" in schema:
        _only(keys, {"anyOf"}, where)
        if not isinstance(schema["anyOf"], list) or not schema["anyOf"]:
            raise UnsupportedSchema(f"{where}: anyOf must be a non-empty list")
        for i, sub in enumerate(schema["anyOf"]):
            check_request_schema(sub, f"{path}.anyOf[{i}]", root)
        return
    if "enum" in schema or "const" in schema:
        _only(keys, {"enum", "const", "type"}, where)
        return
    kinds = schema.get("type", "object" if "properties" in schema else None)
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if not kinds or any(k not in _REQUEST_KEYWORDS for k in kinds):
        raise UnsupportedSchema(f"{where}: type must be one of {sorted(_REQUEST_KEYWORDS)}, got {schema.get('type')!r}")
    _only(keys, {"type"}.union(*(_REQUEST_KEYWORDS[k] for k in kinds)), where)
    if schema.get("additionalProperties", False) is not False:
        raise UnsupportedSchema(f"{where}: additionalProperties may only be false")
    for name, sub in (schema.get("properties") or {}).items():
        check_request_schema(sub, f"{path}.properties.{name}" if path else f"properties.{name}", root)
    if "items" in schema:
        check_request_schema(schema["items"], f"{path}.items" if path else "items", root)


def _only(keys: set[str], allowed: set[str], where: str) -> None:
    extra = sorted(keys - allowed)
    if extra:
        raise UnsupportedSchema(f"{where}: unsupported JSON Schema keyword(s) {extra}")


def _resolve(root: Any, ref: Any, where: str = "$") -> Any:
    """The schema a local `$ref` (#/$defs/NAME or #/definitions/NAME) points to."""
    parts = ref.split("/") if isinstance(ref, str) else []
    if len(parts) != 3 or parts[0] != "#" or parts[1] not in ("$defs", "definitions"):
        raise UnsupportedSchema(f"{where}: only local $refs into $defs are supported, not {ref!r}")
    found = (root.get(parts[1]) or {}).get(parts[2])
    if found is None:
        raise UnsupportedSchema(f"{where}: $ref {ref!r} names no definition")
    return found


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """The llama.cpp grammar (GBNF) of a checked schema, via llama-cpp-python's converter."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf: str = json_schema_to_gbnf(json.dumps(schema))
    # JSON strings may not hold raw control characters; the converter's `char` rule allows them
    gbnf = gbnf.replace('char ::= [^"\\\\]', 'char ::= [^"\\\\\\x7F\\x00-\\x1F]')
    # a string that must not be empty starts with a visible character, so it is never blank once stripped
    gbnf, n = re.subn(r'"\\"" char(?=[ )])', '"\\\\"" char-first', gbnf)
    return gbnf + (f"\n{_CHAR_FIRST}" if n else "")


def validate(schema: dict[str, Any], value: Any, path: str = "$", root: Any = None) -> list[str]:
    """Every way `value` breaks the (checked) schema; empty when it conforms."""
    root = schema if root is None else root
    if "$ref" in schema:
        return validate(_resolve(root, schema["$ref"]), value, path, root)
    if "anyOf" in schema:
        if any(not validate(sub, value, path, root) for sub in schema["anyOf"]):
            return []
        return [f"{path}: matches none of the schemas in anyOf"]
    if "const" in schema:
        return [] if value == schema["const"] else [f"{path}: must be {schema['const']!r}"]
    if "enum" in schema:
        return [] if value in schema["enum"] else [f"{path}: must be one of {schema['enum']}"]
    kinds = schema.get("type", "object" if "properties" in schema else None)
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if None in kinds:
        return []
    if not any(_is(kind, value) for kind in kinds):
        return [f"{path}: expected {' or '.join(kinds)}"]
    if isinstance(value, str):
        low, high = schema.get("minLength", 0), schema.get("maxLength", len(value))
        return [] if low <= len(value) <= high else [f"{path}: length {len(value)} outside {low}-{high}"]
    if isinstance(value, list):
        low, high = schema.get("minItems", 0), schema.get("maxItems", len(value))
        problems = [] if low <= len(value) <= high else [f"{path}: {len(value)} items, outside {low}-{high}"]
        for i, item in enumerate(value):
            problems += validate(schema.get("items", {}), item, f"{path}[{i}]", root)
        return problems
    if isinstance(value, dict):
        props = schema.get("properties")
        problems = [f"{path}: missing {name!r}" for name in schema.get("required", []) if name not in value]
        if props is not None:
            problems += [f"{path}: unexpected {name!r}" for name in value if name not in props]
        for name, sub in (props or {}).items():
            if name in value:
                problems += validate(sub, value[name], f"{path}.{name}", root)
        return problems
    return []


def _is(kind: str, value: Any) -> bool:
    return not (isinstance(value, bool) and kind in ("integer", "number")) and isinstance(value, _PY_TYPES[kind])


def _normalize(schema: dict[str, Any], value: Any, root: Any = None) -> Any:
    """Strip strings; drop repeated items of uniqueItems arrays (a grammar cannot forbid repeats)."""
    root = schema if root is None else root
    if "$ref" in schema:
        return _normalize(_resolve(root, schema["$ref"]), value, root)
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and schema.get("type") == "array":
        items = [_normalize(schema.get("items", {}), v, root) for v in value]
        if schema.get("uniqueItems"):
            items = [v for i, v in enumerate(items) if v not in items[:i]]
        return items
    if isinstance(value, dict) and schema.get("type", "object" if "properties" in schema else None) == "object":
        props = schema.get("properties") or {}
        return {k: _normalize(props.get(k, {}), v, root) for k, v in value.items()}
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
