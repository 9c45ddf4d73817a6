"""Random damage to a valid manifest only ever yields afs's own error, with positions."""

from __future__ import annotations

import copy
import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from afs_build.errors import ManifestError
from afs_build.manifest import load
from conftest import CHAT, MINIMAL

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
    | st.text(max_size=12),
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


def check(project_root, text: str | bytes) -> None:
    path = project_root / "afs.yaml"
    (project_root / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        load(path)
    except ManifestError as err:
        assert err.problems, "an error without a position"
        for problem in err.problems:
            assert problem.file == str(path) and problem.line >= 1 and problem.col >= 1
            assert problem.message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=damaged())
def test_damaged_values_give_positioned_errors(tmp_path, data):
    check(tmp_path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 10_000), insert=st.binary(max_size=6))
def test_damaged_bytes_give_positioned_errors(tmp_path, cut, insert):
    text = yaml.safe_dump(MINIMAL, sort_keys=False).encode()
    cut %= len(text) + 1
    check(tmp_path, text[:cut] + insert + text[cut + len(insert) // 2:])
