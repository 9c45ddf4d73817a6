"""The JSON Schemas in specs/: valid, closed, and documented down to every property."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

SPECS = sorted((Path(__file__).resolve().parent.parent / "specs").glob("*.json"))


def walk(schema, root, where="#"):
    """Yield (where, subschema) for every schema object reachable in `schema`."""
    if not isinstance(schema, dict):
        return
    yield where, schema
    for key in ("properties", "$defs", "patternProperties"):
        for name, sub in schema.get(key, {}).items():
            yield from walk(sub, root, f"{where}/{key}/{name}")
    for key in ("items", "additionalProperties", "then", "else"):  # not `if`: a condition
        if isinstance(schema.get(key), dict):
            yield from walk(schema[key], root, f"{where}/{key}")
    for key in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(schema.get(key, [])):
            yield from walk(sub, root, f"{where}/{key}/{i}")


def resolve(schema, root):
    while "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def test_there_are_the_four_specs():
    assert {p.name for p in SPECS} >= {"manifest.schema.json", "sample.schema.json",
                                       "question.schema.json", "result.schema.json"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_schema_is_valid_draft_2020_12(path):
    schema = json.loads(path.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_object_is_closed(path):
    schema = json.loads(path.read_text())
    for where, sub in walk(schema, schema):
        if "properties" not in sub or sub.get("additionalProperties") is False:
            continue
        # A dispatcher (sources by kind) is closed when each of its branches is.
        branches = [resolve(b["then"], schema) for b in sub.get("allOf", []) if "then" in b]
        assert branches and all(b.get("additionalProperties") is False for b in branches), \
            f"{path.name} {where} accepts unknown keys"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_property_has_a_description_and_a_default(path):
    schema = json.loads(path.read_text())
    for where, sub in walk(schema, schema):
        required = set(sub.get("required", ()))
        for name, prop in sub.get("properties", {}).items():
            target = resolve(prop, schema)
            assert prop.get("description") or target.get("description"), f"{where}/{name}: no description"
            has_default = "default" in prop or "default" in target
            assert has_default or name in required, f"{where}/{name}: neither a default nor required"
            if name in required:
                assert "Required" in (prop.get("description") or target.get("description")), \
                    f"{where}/{name}: required, but its description does not say so"


def test_the_package_reads_the_repositorys_specs_and_templates():
    """afs_build/specs and afs_build/templates link to the top-level folders (package data)."""
    from afs_build import resources

    root = Path(__file__).resolve().parent.parent
    assert resources.specs_dir().resolve() == root / "specs"
    assert resources.templates_dir().resolve() == root / "templates"
