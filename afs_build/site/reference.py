"""The manifest reference, generated from the JSON Schemas' descriptions and defaults.

Every key of ``specs/manifest.schema.json`` gets a row: its dotted path, its type (with the
allowed values, ranges and patterns), its default and its description. Named maps
(``specialists.<name>``) point at their definition, which gets a table of its own; the source
kinds, chosen by ``kind``, each get theirs. The other schemas (questions, results, samples)
follow with the same tables.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ..resources import spec_file

OTHER_SCHEMAS = (("question.schema.json", "Benchmark questions (eval.suite, one JSON object a line)"),
                 ("result.schema.json", "Benchmark results (eval/results.jsonl)"),
                 ("sample.schema.json", "Training samples (data/*/samples.jsonl, mix train and eval)"))


def _ref_name(schema: dict) -> Optional[str]:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) and ref.startswith("#/$defs/") else None


def type_text(schema: dict) -> str:
    """A schema's type as a reader wants it: ``integer, 1 to 64``, ``one of: a, b``."""
    name = _ref_name(schema)
    if name:
        return f"see {name}"
    if "const" in schema:
        return f"exactly {json.dumps(schema['const'])}"
    if "enum" in schema:
        return "one of: " + ", ".join(json.dumps(v) for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(type_text(s) for s in schema[key])
    kind = schema.get("type")
    text = " or ".join(kind) if isinstance(kind, list) else (kind or "any")
    if kind == "array" and isinstance(schema.get("items"), dict):
        text = f"list of {type_text(schema['items'])}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        inner = schema["additionalProperties"]
        text = f"map of name to {type_text(inner)}"
    limits = []
    if "minimum" in schema and "maximum" in schema:
        limits.append(f"{schema['minimum']} to {schema['maximum']}")
    elif "minimum" in schema:
        limits.append(f"at least {schema['minimum']}")
    elif "maximum" in schema:
        limits.append(f"at most {schema['maximum']}")
    if "exclusiveMinimum" in schema:
        limits.append(f"above {schema['exclusiveMinimum']}")
    if "minLength" in schema:
        limits.append(f"at least {schema['minLength']} characters")
    if "pattern" in schema:
        limits.append(f"matching {schema['pattern']}")
    return ", ".join([text] + limits)


def default_text(schema: dict, required: bool) -> str:
    if required:
        return "required"
    if "default" not in schema:
        return ""
    value = schema["default"]
    if value == {} and schema.get("type") == "object":
        return "(its keys' defaults)"
    return json.dumps(value)


def rows(schema: dict, prefix: str = "") -> list[dict]:
    """One row per key of an object schema, nested objects spelled out as dotted paths."""
    out = []
    required = set(schema.get("required") or [])
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{key}"
        out.append({"key": path, "type": type_text(sub), "default": default_text(sub, key in required),
                    "description": sub.get("description", ""), "ref": _ref_name(sub) or _map_ref(sub)})
        if sub.get("type") == "object" and sub.get("properties"):
            out += rows(sub, path + ".")
    return out


def _map_ref(schema: dict) -> Optional[str]:
    inner = schema.get("additionalProperties")
    return _ref_name(inner) if isinstance(inner, dict) else None


def kinds(schema: dict) -> list[tuple[str, str]]:
    """``(kind, definition)`` for an ``allOf`` of ``if kind == x then $ref`` branches."""
    out = []
    for branch in schema.get("allOf") or []:
        kind = (((branch.get("if") or {}).get("properties") or {}).get("kind") or {}).get("const")
        name = _ref_name(branch.get("then") or {})
        if kind and name:
            out.append((kind, name))
    return out


def section(title: str, schema: dict, anchor: str, prefix: str = "") -> dict:
    return {"title": title, "anchor": anchor, "description": schema.get("description", ""),
            "rows": rows(schema, prefix), "kinds": kinds(schema)}


def context() -> dict:
    """The reference page: the manifest's sections, its definitions, then the other files."""
    manifest = _load("manifest.schema.json")
    top = []
    for key, sub in (manifest.get("properties") or {}).items():
        block = section(key, sub, f"manifest-{key}", f"{key}.")
        if not block["rows"]:  # a named map: its one row says what each entry is
            block["rows"] = [{"key": f"{key}.<name>", "type": type_text(sub), "default": default_text(
                sub, key in (manifest.get("required") or [])), "description": sub.get("description", ""),
                "ref": _map_ref(sub)}]
        top.append(block)
    definitions = [section(name, sub, f"def-{name}") for name, sub in (manifest.get("$defs") or {}).items()]
    others = [section(title, _load(name), f"file-{name.split('.')[0]}") for name, title in OTHER_SCHEMAS]
    return {"description": manifest.get("description", ""), "sections": top, "definitions": definitions,
            "others": others}


def _load(name: str) -> Any:
    return json.loads(spec_file(name).read_text(encoding="utf-8"))
