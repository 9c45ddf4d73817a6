"""The JSON Schemas in ``specs/``: loading, default filling, and readable errors.

The schema is the single source of truth for the manifest's keys, types and defaults:
:func:`apply_defaults` fills every omitted key from the schema's ``default`` before the
dataclasses are built, and :func:`schema_problems` turns jsonschema's errors into
``FILE:LINE:COL: key.path: ...`` problems with suggestions.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any, Iterator

import jsonschema

from .errors import Problem, one_of, suggest
from .resources import spec_file
from .yamlload import Positions

NAME_PATTERN = "^[a-z][a-z0-9_-]{0,47}$"
NAME_RULE = "expected a safe name: lowercase letters, digits, '-' or '_', starting with a letter, at most 48 characters"
TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
              "number": "a number", "boolean": "true or false", "null": "null"}


@functools.lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    """A schema from ``specs/`` by file name (cached: schemas do not change during a run)."""
    with open(spec_file(name), encoding="utf-8") as handle:
        return json.load(handle)


def _is_integer(checker, instance) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


# JSON Schema counts 6001.0 as an integer; a port, a count or a seed written as a float is a
# mistake in a manifest (and would reach the code as a float), so "integer" means int here.
Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))


@functools.lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.Draft202012Validator:
    return Validator(load_schema(name))


def resolve(schema: dict, root: dict) -> dict:
    """Follow a local ``$ref`` (``#/$defs/x``)."""
    while "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def apply_defaults(value: Any, schema: dict, root: dict) -> Any:
    """A copy of `value` with every omitted key filled from the schema's defaults."""
    schema = resolve(schema, root)
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for sub in schema.get("allOf", ()):
        cond = sub.get("if")
        if cond is not None and Validator(cond).is_valid(out):
            out = apply_defaults(out, sub["then"], root)
    props = schema.get("properties", {})
    for key, prop in props.items():
        target = resolve(prop, root)
        if key not in out and "default" in prop:
            out[key] = copy.deepcopy(prop["default"])
        elif key not in out and "default" in target:
            out[key] = copy.deepcopy(target["default"])
        if key in out:
            out[key] = apply_defaults(out[key], prop, root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in out:
            if key not in props:
                out[key] = apply_defaults(out[key], extra, root)
    return out


def schema_problems(instance: Any, name: str, positions: Positions) -> list[Problem]:
    """Every schema violation of `instance`, as positioned problems."""
    root = load_schema(name)
    problems: list[Problem] = []
    for error in validator(name).iter_errors(instance):
        problems.extend(_translate(error, root, positions))
    return problems


def _leaf_errors(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    """For anyOf/oneOf, the most relevant sub-error instead of 'is not valid under any'."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        non_type = [e for e in error.context if e.validator != "type"]
        if non_type:
            yield from _leaf_errors(jsonschema.exceptions.best_match(non_type))
            return
    yield error


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _translate(error: jsonschema.ValidationError, root: dict, positions: Positions) -> Iterator[Problem]:
    for err in _leaf_errors(error):
        path = tuple(err.absolute_path)
        kind, value, schema = err.validator, err.instance, err.schema
        if kind == "additionalProperties":
            allowed = sorted(schema.get("properties", {}))
            for key in sorted(k for k in value if k not in schema.get("properties", {})):
                yield positions.problem(path + (key,), f"unknown key {key!r}; expected one of: "
                                        f"{one_of(allowed)}{suggest(key, allowed)}", key=True)
        elif kind == "required":
            missing = [k for k in err.validator_value if k not in value]
            for key in missing:
                prop = resolve(schema.get("properties", {}).get(key, {}), root)
                what = prop.get("description", "").split(". Required")[0].rstrip(".")
                yield positions.problem(path + (key,), f"missing required key {key!r}; expected {what[:1].lower() + what[1:]}"
                                        if what else f"missing required key {key!r}")
        elif kind == "pattern" and "propertyNames" in err.absolute_schema_path:
            name = str(value)
            parent = path
            fixed = "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower()).strip("-_")
            hint = f" (did you mean {fixed!r}?)" if fixed and fixed != name else ""
            yield positions.problem(parent + (name,), f"{name!r} is not a safe name; {NAME_RULE}{hint}", key=True)
        elif kind == "pattern" and err.validator_value == NAME_PATTERN:
            yield positions.problem(path, f"{_describe(value)} is not a safe name; {NAME_RULE}")
        elif kind == "type":
            wanted = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
            names = " or ".join(TYPE_NAMES.get(t, t) for t in wanted if t != "null")
            if "null" in wanted:
                names += " or null"
            yield positions.problem(path, f"expected {names}, got {_describe(value)}")
        elif kind == "enum":
            choices = [c for c in err.validator_value if c is not None]
            yield positions.problem(path, f"expected one of: {one_of(choices)}; got {_describe(value)}"
                                    f"{suggest(value, choices) if isinstance(value, str) else ''}")
        elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
            yield positions.problem(path, f"expected a number {op} {err.validator_value}, got {_describe(value)}")
        elif kind in ("minItems", "minProperties", "minLength"):
            what = {"minItems": "a list of at least {} item(s)", "minProperties": "at least {} entry(ies)",
                    "minLength": "a string of at least {} character(s)"}[kind]
            yield positions.problem(path, f"expected {what.format(err.validator_value)}, got {_describe(value)}")
        elif kind == "uniqueItems":
            yield positions.problem(path, "expected each item once; remove the repeated item")
        elif kind == "pattern":
            yield positions.problem(path, f"{_describe(value)} does not have the expected form "
                                    f"(pattern {err.validator_value})")
        else:  # pragma: no cover - a schema keyword without its own wording yet
            yield positions.problem(path, err.message)
