"""Random damage to a valid manifest: afs's own error with positions, or a manifest that is valid.

A damaged manifest that :func:`load` accepts is checked again by readings independent of afs's
loader: PyYAML's own, the JSON Schema through plain jsonschema, the cross checks, and the types
of every field of the frozen dataclasses. Accepting a damaged manifest that fails any of them
is a failure, not a pass.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import typing
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from afs_build import checks, schema
from afs_build.errors import ManifestError
from afs_build.manifest import SCHEMA, FrozenMap, Manifest, from_data, load, plain
from afs_build.yamlload import Positions
from conftest import CHAT, MINIMAL

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.integers()
    | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from paths(sub, prefix + (key,))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from paths(sub, prefix + (i,))


@st.composite
def damaged(draw):
    data = copy.deepcopy(MINIMAL)
    for _ in range(draw(st.integers(1, 3))):
        all_paths = [p for p in paths(data) if p]
        path = draw(st.sampled_from(all_paths))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(VALUES)
        if not isinstance(data, dict) or not data:
            break
    return data


class PlainLoader(yaml.SafeLoader):
    """PyYAML's safe reading, with dates left as text (as afs reads them)."""


PlainLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def check(project_root, text: str | bytes) -> None:
    path = project_root / "afs.yaml"
    (project_root / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        manifest = load(path)
    except ManifestError as err:
        assert err.problems, "an error without a position"
        for problem in err.problems:
            assert problem.file == str(path) and problem.line >= 1 and problem.col >= 1
            assert problem.message
        return
    assert_really_valid(manifest, path)


def assert_really_valid(manifest: Manifest, path: Path) -> None:
    """What load() accepted passes every check when read without afs's loader."""
    raw = yaml.load(path.read_bytes(), Loader=PlainLoader)
    root = schema.load_schema(SCHEMA)
    errors = [e.message for e in jsonschema.Draft202012Validator(root).iter_errors(raw)]
    assert not errors, f"accepted, but the schema rejects it: {errors}"
    data = schema.apply_defaults(raw, root, root)
    problems = checks.cross_problems(data, Positions(str(path)), path.parent)
    assert not problems, f"accepted, but the cross checks reject it: {problems}"
    assert plain(manifest) == plain(from_data(data, manifest.file, manifest.digest)), \
        "afs's loader read something other than what the file says"
    assert_typed(manifest)


def assert_typed(value, where="manifest") -> None:
    """Every dataclass field holds the type its annotation names (an int port, not 6001.0)."""
    if isinstance(value, FrozenMap):
        for key, sub in value.items():
            assert_typed(sub, f"{where}.{key}")
        return
    if not dataclasses.is_dataclass(value):
        return
    hints = typing.get_type_hints(type(value))
    for field in dataclasses.fields(value):
        sub = getattr(value, field.name)
        assert holds(hints[field.name], sub), f"{where}.{field.name}: {sub!r} is not {hints[field.name]}"
        assert_typed(sub, f"{where}.{field.name}")


def holds(hint, value) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return any(holds(a, value) for a in args)
    if origin is tuple:
        return isinstance(value, tuple) and all(holds(args[0], v) for v in value)
    if hint is type(None):
        return value is None
    if hint in (int, float):  # bool is an int to Python, never to a manifest
        return isinstance(value, hint) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=damaged())
def test_damaged_values_give_positioned_errors_or_a_valid_manifest(tmp_path, data):
    try:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    except ValueError:  # PyYAML cannot even write an integer of thousands of digits
        return
    check(tmp_path, text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 10_000), insert=st.binary(max_size=6))
def test_damaged_bytes_give_positioned_errors_or_a_valid_manifest(tmp_path, cut, insert):
    text = yaml.safe_dump(MINIMAL, sort_keys=False).encode()
    cut %= len(text) + 1
    check(tmp_path, text[:cut] + insert + text[cut + len(insert) // 2:])


@pytest.mark.parametrize("port, complaint", [(6001.0, "port: 6001.0 is not"),
                                              ("6001", "the schema rejects it")])
def test_the_oracle_catches_what_a_lax_loader_would_accept(tmp_path, monkeypatch, port, complaint):
    """With the schema check switched off, load() lets a damaged port through; the oracle does not."""
    monkeypatch.setattr(schema, "schema_problems", lambda *args: [])
    data = copy.deepcopy(MINIMAL)
    data["specialists"]["alpha"]["port"] = port
    path = tmp_path / "afs.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    manifest = load(path)
    with pytest.raises(AssertionError, match=complaint):
        assert_really_valid(manifest, path)
