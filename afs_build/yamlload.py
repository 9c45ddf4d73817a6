"""Read a YAML file into plain Python values and a map of where each value stands.

PyYAML alone silently keeps the last of two duplicate keys, follows aliases without limit and
loses positions after construction. This loader composes the node graph with ``SafeLoader``,
then builds the values itself so that it can:

* report duplicate keys, unknown tags and syntax errors with their line and column;
* refuse alias expansion beyond a node budget (the "billion laughs" bomb) and cyclic aliases;
* refuse what no manifest value can be (integers beyond 64 bits, whose thousands of digits
  would hit Python's int-string limit; NaN and infinities; tags other than the plain ones),
  and read YAML 1.1 dates as the text they show;
* record the position of every key and value by key path, for error messages later on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ManifestError, Problem

# Enough for any real manifest (the default has about 1,500 nodes), far below a bomb.
MAX_NODES = 100_000

TOO_DEEP = "lists or mappings are nested too deeply; expected a manifest a few levels deep"
PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
SCALAR_TAGS = tuple(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null"))
INT_TAG = "tag:yaml.org,2002:int"
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
# No manifest value needs more than a 64-bit integer; a larger one would fail later in torch,
# numpy or JSON (and one of thousands of digits hits Python's int-string limit right here).
MAX_INT = 2**63 - 1

KeyPath = tuple  # of str keys and int indexes


@dataclass(frozen=True)
class Positions:
    """Where each key path stands in the file (1-based line and column)."""

    file: str
    values: dict = field(default_factory=dict)  # path -> (line, col) of the value
    keys: dict = field(default_factory=dict)  # path -> (line, col) of the key itself

    def of(self, path: KeyPath, *, key: bool = False) -> tuple[int, int]:
        """Position of `path`, or of its nearest ancestor that has one."""
        table = self.keys if key else self.values
        path = tuple(path)
        while path:
            if path in table:
                return table[path]
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), (1, 1))

    def problem(self, path: KeyPath, message: str, *, key: bool = False) -> Problem:
        line, col = self.of(path, key=key)
        return Problem(self.file, line, col, dotted(path), message)


def dotted(path: KeyPath) -> str:
    """``specialists.majora.lora.r`` / ``mixes.m.groups[0]`` for a key path."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    """Builds Python values from a composed node graph, with positions and limits."""

    def __init__(self, file: str):
        self.file = file
        self.positions = Positions(file)
        self.problems: list[Problem] = []
        self.count = 0
        self.scalars = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node, message: str, path: KeyPath = ()) -> None:
        line, col = _mark(node)
        self.problems.append(Problem(self.file, line, col, dotted(path), message))

    def build(self, node: yaml.Node, path: KeyPath, active: frozenset) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(node, path)
        self.positions.values.setdefault(path, _mark(node))
        if id(node) in active:
            self.fail(node, "an alias refers to the mapping or list that contains it (a cycle); "
                      "expected a tree: copy the values instead", path)
            return None
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in PLAIN_TAGS:
            self.fail(node, f"cannot read this value: tag {node.tag!r} is not allowed; expected "
                      "a plain mapping or list", path)
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, active | {id(node)})
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,), active | {id(node)})
                    for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        """A scalar's value; a number afs cannot use is a problem here, not a crash later."""
        if node.tag == TIMESTAMP_TAG:  # YAML 1.1 dates: a manifest means the text it shows
            return node.value
        if node.tag not in SCALAR_TAGS:  # !!binary, !!set, !!map on a scalar, unknown tags
            self.fail(node, f"cannot read this value: tag {node.tag!r} is not allowed; expected "
                      "a plain string, number, boolean or null", path)
            return None
        try:
            value = self.scalars.construct_object(node)
        except (ValueError, KeyError, IndexError):
            # `!!int x`, `!!bool x`, or an integer of thousands of digits (int-string limit)
            digits = node.value.lstrip("+-").replace("_", "")
            if node.tag == INT_TAG and digits.isdigit():
                self._too_large(node, path)
            else:
                tag = node.tag.rsplit(":", 1)[-1]
                what = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(tag, tag)
                self.fail(node, f"cannot read {_short(node.value)} as {what} (tag !!{tag}); "
                          "expected a value of that type, or quote it to make it a string", path)
            return None
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            self._too_large(node, path)
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(node, f"{_short(node.value)} is not a finite number; expected an "
                      "ordinary number", path)
            return None
        return value

    def _too_large(self, node: yaml.Node, path: KeyPath) -> None:
        digits = len(node.value.lstrip("+-").replace("_", ""))
        self.fail(node, f"number too large ({digits:,} digits); expected an integer of at most "
                  f"{MAX_INT:,}", path)

    def _mapping(self, node: yaml.MappingNode, path: KeyPath, active: frozenset) -> dict:
        out: dict = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`
                merges.extend(value_node.value if isinstance(value_node, yaml.SequenceNode)
                              else [value_node])
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(key_node, "a key must be a plain string", path)
                continue
            before = len(self.problems)
            key = self._scalar(key_node, path)
            if len(self.problems) > before:
                continue
            if not isinstance(key, str):
                key = str(key) if not isinstance(key, bool) else str(key).lower()
            child = path + (key,)
            if key in out:
                first = self.positions.keys[child]
                self.fail(key_node, f"duplicate key {key!r} (first defined at line {first[0]}); "
                          "expected each key once: remove or rename one", child)
                continue
            self.positions.keys[child] = _mark(key_node)
            out[key] = self.build(value_node, child, active)
        # Merged keys fill in what the mapping does not set itself (YAML's merge-key rule);
        # the explicit keys keep their own positions.
        explicit = {k: self.positions.keys[path + (k,)] for k in out}
        for merged in merges:
            if not isinstance(merged, yaml.MappingNode):
                self.fail(merged, "'<<' must merge a mapping (an alias to one, or a list of them)", path)
                continue
            for key, value in self.build(merged, path, active).items():
                out.setdefault(key, value)
        for key, mark in explicit.items():
            self.positions.keys[path + (key,)] = mark
        return out


def _short(text: str) -> str:
    """`text` quoted, cut to a readable length."""
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")


class _TooBig(Exception):
    def __init__(self, node: yaml.Node, path: KeyPath):
        self.node = node
        self.path = path


def read_text(path: Path, name: str | None = None) -> str:
    """The file's text, or a ManifestError for a missing, unreadable or non-UTF-8 file."""
    name = name or str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(problems=[Problem(name, 1, 1, "", "file not found; expected a "
                            "YAML manifest here (create it, or pass another path)")]) from None
    except IsADirectoryError:
        raise ManifestError(problems=[Problem(name, 1, 1, "", "is a folder; expected a YAML "
                            "manifest file (for example afs.yaml)")]) from None
    except OSError as err:
        raise ManifestError(problems=[Problem(name, 1, 1, "", f"cannot read: {err.strerror}")]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ManifestError(problems=[Problem(
            name, line, col, "", f"byte 0x{data[err.start]:02x} is not valid UTF-8; "
            "expected a UTF-8 text file: re-save it as UTF-8")]) from None


def load_yaml(path: Path, name: str | None = None) -> tuple[Any, Positions]:
    """Parse `path` into (value, positions); problems name the file as `name` (default: `path`)."""
    name = name or str(path)
    text = read_text(path, name)
    if not text.strip() or all(l.strip().startswith("#") or not l.strip() for l in text.splitlines()):
        raise ManifestError(problems=[Problem(name, 1, 1, "", "file is empty; expected a "
                            "mapping with at least 'project' and 'specialists'")])
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        col = err.position - (text.rfind("\n", 0, err.position) + 1) + 1
        raise ManifestError(problems=[Problem(name, line, col, "", f"character #x{err.character:04x} "
                            "is not allowed in YAML; expected printable text: remove it")]) from None
    except RecursionError:
        raise ManifestError(problems=[Problem(name, 1, 1, "", TOO_DEEP)]) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = err.problem or err.context or "syntax error"
        raise ManifestError(problems=[Problem(name, line, col, "", f"YAML syntax error: {what}; "
                            "expected valid YAML (check indentation, colons and quotes)")]) from None
    except yaml.YAMLError as err:
        raise ManifestError(problems=[Problem(name, 1, 1, "", f"YAML error: {err}")]) from None
    if node is None:
        raise ManifestError(problems=[Problem(name, 1, 1, "", "file is empty; expected a "
                            "mapping with at least 'project' and 'specialists'")])
    builder = _Builder(name)
    try:
        value = builder.build(node, (), frozenset())
    except RecursionError:
        raise ManifestError(problems=[Problem(name, 1, 1, "", TOO_DEEP)]) from None
    except _TooBig as big:
        top = big.path[:1]
        line, col = builder.positions.keys.get(top) or _mark(big.node)
        raise ManifestError(problems=[Problem(name, line, col, dotted(top), f"YAML aliases expand to "
                            f"more than {MAX_NODES:,} values (an entity-expansion bomb?); expected "
                            "a manifest without deeply nested aliases")]) from None
    if builder.problems:
        raise ManifestError(problems=builder.problems)
    return value, builder.positions
