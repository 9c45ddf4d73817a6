"""The codebase converter: walking a repository and asking grounded questions about it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from afs_build.data.codebase import convert_codebase, iter_files
from afs_build.data.records import Reject, split_records

REPO = Path(__file__).resolve().parents[2]
VALIDATOR = jsonschema.Draft202012Validator(json.loads((REPO / "specs/sample.schema.json").read_text()))

ENGINE = '''\
"""Tile engine: uploads graphics to VRAM during V-blank."""

MAX_TILES = 1024


def upload(tiles: list[bytes], *, address: int = 0x4000) -> int:
    """Queue tiles for the next V-blank.

    Returns the number of bytes queued.
    """
    return sum(map(len, tiles))


class Queue(Base):
    """A FIFO of pending DMA transfers."""

    size: int
    name: str = "vram"

    def push(self, item, /, priority=0, *rest, **options) -> None:
        """Add a transfer."""

    def _drop(self):
        pass

    def __repr__(self):
        return "Queue()"
'''

NMI_ASM = '''\
; nmi.asm - V-blank handler for the SNES demo.
; Uploads OAM and scroll shadows.

.include "regs.inc"

;;;;;;;;;;;;;;;;;;;;;;;;;;;;;;;;;;;;;;;;;;
; Called by the NMI vector at the start of V-blank.
NmiHandler:
    rep #$30
    pha
.loop:
    rti

UnusedLabel:
    rts
'''

README = '''\
# Demo

A small SNES demo used by the tests.

## Building

Run `make`.

```sh
# not a heading
```

## Layout

Code lives in src.
'''

TREE: dict[str, str | bytes] = {
    ".gitignore": "build/\n*.log\n!keep.log\n",
    "keep.log": "kept by a negation\n",
    "debug.log": "ignored by *.log\n",
    "build/out.py": '"""Ignored: build/ is in .gitignore."""\n',
    "src/.gitignore": "secret.py\n",
    "src/secret.py": '"""Ignored by the nested .gitignore."""\n',
    "src/engine.py": ENGINE,
    "src/nmi.asm": NMI_ASM,
    "README.md": README,
    ".git/config": "[core]\n",
    "assets/blob.bin": b"\x00\x01\x02\x03",
    "assets/latin1.md": b"caf\xe9\n",
    "src/huge.py": "x = 1\n" * 400,
    "src/empty.py": "",
    "src/broken.py": "x = (1,\n",
    "src/bare.c": "int counter;\n",
}


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def convert(root: Path, **options) -> tuple[list[dict], list[Reject]]:
    options.setdefault("max_file_bytes", 1000)
    return split_records(convert_codebase(root, source="demo", **options))


def answers(samples: list[dict]) -> dict[str, str]:
    return {s["messages"][0]["content"]: s["messages"][1]["content"] for s in samples}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "repo", TREE)


def test_walk_honours_gitignore_and_rejects_unusable_files(repo: Path):
    samples, rejects = convert(repo)
    found = {Path(r.file).relative_to(repo).as_posix(): r.reason for r in rejects}
    assert found == {
        ".gitignore": "unsupported file type (no extension)",
        "src/.gitignore": "unsupported file type (no extension)",
        "keep.log": "unsupported file type '.log'",
        "assets/blob.bin": "binary file: contains NUL bytes",
        "assets/latin1.md": "not UTF-8 text: invalid continuation byte at byte 3",
        "src/bare.c": "nothing to ask about: no docstrings, comments or definitions found",
        "src/broken.py": "Python syntax error: '(' was never closed",
        "src/empty.py": "empty file",
        "src/huge.py": "file too large: 2400 bytes, over max_file_bytes=1000",
    }
    broken = next(r for r in rejects if r.file.endswith("broken.py"))
    assert (broken.line, broken.excerpt, broken.source) == (1, "x = (1,", "demo")
    paths = {s["provenance"]["path"] for s in samples}
    assert paths == {"README.md", "src/engine.py", "src/nmi.asm"}
    for sample in samples:
        VALIDATOR.validate(sample)


def test_walk_without_gitignore_and_with_include_exclude(repo: Path):
    listed = [p.relative_to(repo).as_posix() for p in iter_files(repo, respect_gitignore=False)]
    assert "build/out.py" in listed and "src/secret.py" in listed and "debug.log" in listed
    assert not any(p.startswith(".git/") for p in listed)
    listed = [p.relative_to(repo).as_posix() for p in iter_files(repo, include=["*.py"], exclude=["src/b*"])]
    assert listed == ["src/empty.py", "src/engine.py", "src/huge.py"]
    samples, rejects = convert(repo, include=["src/**"], exclude=["*.asm", "src/b*"])
    assert {s["provenance"]["path"] for s in samples} == {"src/engine.py"}
    assert {Path(r.file).relative_to(repo).as_posix() for r in rejects} == {
        "src/.gitignore", "src/empty.py", "src/huge.py"}


HOW = '''\
"""Cache of uploads."""

LIMIT = 0x40
NAME = "a string far too long to be worth quoting as a constant's value"


def store(key: str, blob: bytes) -> str:
    """Keep `blob` under `key`."""
    if len(blob) > LIMIT:  # larger blobs go to disk
        raise ValueError(f"blob for {key} too large")
    # digests are short: the first 8 hex digits
    digest = hashlib.sha256(blob).hexdigest()
    print("# not a comment", NAME)
    return digest[:8] + key.lower()


def bare(x):
    return x
'''


def test_python_behaviour_quotes_what_a_function_does(tmp_path: Path):
    (tmp_path / "cache.py").write_text(HOW)
    samples, _ = convert(tmp_path)
    qa = answers(samples)
    assert qa["How does `store` in `cache.py` work?"] == (
        "`store` in `cache.py` (line 7): Keep `blob` under `key`.\n\n"
        'The code notes: "larger blobs go to disk"; "digests are short: the first 8 hex digits".\n\n'
        "It calls `ValueError(f\"blob for {key} too large\")`, `hashlib.sha256(blob).hexdigest()` and "
        "`key.lower()`.\n\nIt raises `ValueError`.\n\nIt uses `LIMIT = 0x40` and `NAME`.\n\n"
        "It returns `digest[:8] + key.lower()`."
    )
    # A function that only returns its argument says too little to explain.
    assert "How does `bare` in `cache.py` work?" not in qa


def test_codebase_questions_setting_keeps_only_those_types(tmp_path: Path):
    (tmp_path / "cache.py").write_text(HOW)
    samples, _ = convert(tmp_path, questions=("behaviour", "purpose"))
    kinds = {s["metadata"]["question_type"] for s in samples}
    assert kinds == {"behaviour", "purpose"}
    samples, _ = convert(tmp_path, questions=("location",))
    assert [s["messages"][0]["content"] for s in samples] == ["Which file defines `bare`?", "Which file defines `store`?"]
    with pytest.raises(ValueError, match="unknown question type.*bogus"):
        convert(tmp_path, questions=("bogus",))


def test_python_module_functions_and_classes(repo: Path):
    samples, _ = convert(repo, include=["src/engine.py"])
    qa = answers(samples)
    assert list(qa) == [
        "What is the Python module `src/engine.py` for?",
        "What does `upload` in `src/engine.py` do?",
        "How does `upload` in `src/engine.py` work?",
        "What is the signature of `upload` in `src/engine.py`?",
        "What parameters does `upload` in `src/engine.py` take?",
        "What is the class `Queue` in `src/engine.py` for?",
        "What methods does the class `Queue` in `src/engine.py` have?",
        "What fields does the class `Queue` in `src/engine.py` declare?",
        "What does `Queue.push` in `src/engine.py` do?",
        "What is the signature of `Queue.push` in `src/engine.py`?",
        "What parameters does `Queue.push` in `src/engine.py` take?",
        "What is the signature of `Queue._drop` in `src/engine.py`?",
        "What does `src/engine.py` define?",
        "Which file defines `Queue`?",
        "Which file defines `Queue._drop`?",
        "Which file defines `Queue.push`?",
        "Which file defines `upload`?",
    ]
    assert qa["What is the Python module `src/engine.py` for?"] == "Tile engine: uploads graphics to VRAM during V-blank."
    assert qa["What does `upload` in `src/engine.py` do?"] == (
        "```python\ndef upload(tiles: list[bytes], *, address: int = 0x4000) -> int: ...\n```\n\n"
        "Queue tiles for the next V-blank.\n\nReturns the number of bytes queued."
    )
    assert qa["How does `upload` in `src/engine.py` work?"] == (
        "`upload` in `src/engine.py` (line 6): Queue tiles for the next V-blank.\n\n"
        "Returns the number of bytes queued.\n\nIt returns `sum(map(len, tiles))`."
    )
    assert qa["What parameters does `upload` in `src/engine.py` take?"] == (
        "`upload` takes:\n- `tiles: list[bytes]`\n- `address: int = 0x4000` (keyword-only)\n\n"
        "It is annotated to return `int`."
    )
    assert qa["What is the signature of `Queue.push` in `src/engine.py`?"] == (
        "```python\ndef push(self, item, /, priority=0, *rest, **options) -> None: ...\n```"
    )
    assert qa["What parameters does `Queue.push` in `src/engine.py` take?"] == (
        "`Queue.push` takes:\n- `item` (positional-only)\n- `priority=0`\n"
        "- `rest` (extra positional arguments, `*`)\n- `options` (extra keyword arguments, `**`)\n\n"
        "It is annotated to return `None`."
    )
    assert qa["What is the class `Queue` in `src/engine.py` for?"] == (
        "```python\nclass Queue(Base): ...\n```\n\nA FIFO of pending DMA transfers."
    )
    assert qa["What methods does the class `Queue` in `src/engine.py` have?"] == (
        "`Queue` defines these methods:\n- `def push(self, item, /, priority=0, *rest, **options) -> None`: "
        "Add a transfer.\n- `def _drop(self)`\n- `def __repr__(self)`"
    )
    assert qa["What fields does the class `Queue` in `src/engine.py` declare?"] == (
        '`Queue` declares these fields:\n- `size: int`\n- `name: str = "vram"`'
    )
    assert qa["What does `src/engine.py` define?"] == (
        "`src/engine.py` defines:\n- constant `MAX_TILES`\n"
        "- `def upload(tiles: list[bytes], *, address: int = 0x4000) -> int`: Queue tiles for the next V-blank.\n"
        "- class `Queue`: A FIFO of pending DMA transfers."
    )
    assert qa["Which file defines `upload`?"] == (
        "`upload` is defined in `src/engine.py` (line 6):\n\n"
        "```python\ndef upload(tiles: list[bytes], *, address: int = 0x4000) -> int: ...\n```"
    )
    push = next(s for s in samples if s["messages"][0]["content"].startswith("What does `Queue.push`"))
    assert push["provenance"] == {"path": "src/engine.py", "line": 20, "symbol": "Queue.push"}
    assert push["metadata"] == {"kind": "function", "language": "python", "question_type": "purpose",
                                "symbol_kind": "method"}


def test_asm_and_markdown_by_comments_and_headings(repo: Path):
    samples, _ = convert(repo, include=["*.asm", "*.md"], exclude=["assets/"])
    qa = answers(samples)
    assert qa["What is `src/nmi.asm` for?"] == "nmi.asm - V-blank handler for the SNES demo.\nUploads OAM and scroll shadows."
    assert qa["What does the label `NmiHandler` in `src/nmi.asm` do?"] == (
        "```asm\nNmiHandler:\n```\n\nCalled by the NMI vector at the start of V-blank."
    )
    assert qa["What does `src/nmi.asm` define?"] == (
        "`src/nmi.asm` defines:\n- label `NmiHandler` (line 8)\n- label `UnusedLabel` (line 14)"
    )
    assert qa["Which file defines `UnusedLabel`?"] == (
        "`UnusedLabel` is defined in `src/nmi.asm` (line 14):\n\n```asm\nUnusedLabel:\n```"
    )
    assert not any("loop" in q for q in qa)
    assert qa["What is `README.md` for?"] == "Demo\n\nA small SNES demo used by the tests."
    assert qa['What does the section "Building" of `README.md` say?'] == (
        "Run `make`.\n\n```sh\n# not a heading\n```"
    )
    assert qa["What sections does `README.md` have?"] == "- Demo\n  - Building\n  - Layout"
    label = next(s for s in samples if "`NmiHandler` in" in s["messages"][0]["content"])
    assert label["metadata"] == {"kind": "section", "language": "asm65816", "question_type": "purpose",
                                 "symbol_kind": "label"}


OTHER_LANGUAGES = {
    "lib/math.c": (
        "/*\n * Copyright 2024 Someone. Licensed under the MIT license.\n */\n\n"
        "/* Fixed-point helpers for the mode 7 matrix. */\n\n#include <stdint.h>\n\n"
        "/**\n * Multiply two 8.8 fixed-point numbers.\n */\n"
        "int32_t fx_mul(int32_t a, int32_t b)\n{\n    return (a * b) >> 8;\n}\n"
    ),
    "web/app.ts": (
        "// Front end of the sample viewer.\n\n"
        "/** Render one sample. */\nexport function render(sample: Sample): string {\n  return '';\n}\n\n"
        "export const score = (s: Sample) => 1;\n\nexport interface Sample {\n  id: string;\n}\n"
    ),
    "cmd/main.go": (
        "// Package main runs the trainer.\npackage main\n\n"
        "// Train fits one adapter.\nfunc (t *Trainer) Train(ctx context.Context) error {\n\treturn nil\n}\n"
    ),
    "src/lib.rs": (
        "//! Dataset tools.\n\n/// A canonical sample.\n#[derive(Debug)]\npub struct Sample {\n    id: String,\n}\n\n"
        "/// Load samples from a file.\npub fn load(path: &str) -> Vec<Sample> {\n    vec![]\n}\n"
    ),
    "Assets/Player.cs": (
        "using UnityEngine;\n\n/// <summary>\n/// Moves the player.\n/// </summary>\n"
        "public class PlayerController : MonoBehaviour\n{\n"
        "    /// <summary>Jump once.</summary>\n    /// <param name=\"force\">Upward force.</param>\n"
        "    public void Jump(float force)\n    {\n    }\n}\n"
    ),
    "scripts/deploy": "#!/usr/bin/env bash\n# Deploy the models to LM Studio.\n\n# Copy one model.\ncopy_model() {\n  cp \"$1\" out/\n}\n",
    "tools/fx.py": '"""Fixed-point helpers."""\n\n\ndef fx_mul(a, b):\n    return a * b >> 8\n',
}


def test_other_languages_and_shared_names(tmp_path: Path):
    root = write_tree(tmp_path / "repo", OTHER_LANGUAGES)
    samples, rejects = convert(root)
    assert rejects == []
    qa = answers(samples)
    assert qa["What is `lib/math.c` for?"] == "Fixed-point helpers for the mode 7 matrix."
    assert qa["What does the function `fx_mul` in `lib/math.c` do?"] == (
        "```c\nint32_t fx_mul(int32_t a, int32_t b)\n```\n\nMultiply two 8.8 fixed-point numbers."
    )
    assert qa["What is `web/app.ts` for?"] == "Front end of the sample viewer."
    assert qa["What does the function `render` in `web/app.ts` do?"] == (
        "```ts\nexport function render(sample: Sample): string {\n```\n\nRender one sample."
    )
    assert qa["What does `web/app.ts` define?"] == (
        "`web/app.ts` defines:\n- function `render` (line 4)\n- function `score` (line 8)\n- interface `Sample` (line 10)"
    )
    assert qa["What is `cmd/main.go` for?"] == "Package main runs the trainer."
    assert qa["What does the function `Train` in `cmd/main.go` do?"].endswith("\n\nTrain fits one adapter.")
    assert qa["What is `src/lib.rs` for?"] == "Dataset tools."
    assert qa["What is the struct `Sample` in `src/lib.rs` for?"] == "```rust\npub struct Sample {\n```\n\nA canonical sample."
    assert qa["What does the function `load` in `src/lib.rs` do?"].endswith("\n\nLoad samples from a file.")
    assert qa["What is the class `PlayerController` in `Assets/Player.cs` for?"].endswith("\n\nMoves the player.")
    assert qa["What does the method `Jump` in `Assets/Player.cs` do?"] == (
        "```csharp\npublic void Jump(float force)\n```\n\nJump once.\nParameter `force`: Upward force."
    )
    assert qa["What is `scripts/deploy` for?"] == "Deploy the models to LM Studio."
    assert qa["What does the function `copy_model` in `scripts/deploy` do?"] == "```sh\ncopy_model() {\n```\n\nCopy one model."
    assert qa["Which file defines `fx_mul`?"] == (
        "`fx_mul` is defined in 2 places:\n- `lib/math.c` (line 12): `int32_t fx_mul(int32_t a, int32_t b)`\n"
        "- `tools/fx.py` (line 4): `def fx_mul(a, b): ...`"
    )
    languages = {s["provenance"]["path"]: s["metadata"]["language"] for s in samples}
    assert languages == {"lib/math.c": "c", "web/app.ts": "typescript", "cmd/main.go": "go", "src/lib.rs": "rust",
                         "Assets/Player.cs": "csharp", "scripts/deploy": "shell", "tools/fx.py": "python"}
    for sample in samples:
        VALIDATOR.validate(sample)


def test_symlinks_are_rejected_not_followed(tmp_path: Path):
    root = write_tree(tmp_path / "repo", {"real/a.py": '"""A."""\n'})
    os.symlink(root / "real", root / "linked")
    os.symlink(root / "real" / "a.py", root / "b.py")
    _, rejects = convert(root)
    assert sorted((Path(r.file).name, r.reason) for r in rejects) == [
        ("b.py", "symbolic link (not followed)"), ("linked", "symbolic link (not followed)")]
    assert [p.name for p in iter_files(root)] == ["a.py"]


def test_missing_root_is_named(tmp_path: Path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"^codebase root not found: {missing}$"):
        list(convert_codebase(missing, source="demo"))
    with pytest.raises(FileNotFoundError, match=f"^codebase root not found: {missing}$"):
        list(iter_files(missing))


def test_afs_own_package_converts_deterministically():
    package = REPO / "afs_build"
    first = list(convert_codebase(package, source="afs"))
    samples, rejects = split_records(first)
    assert len(samples) > 100
    broken = ("Python syntax error", "binary file", "not UTF-8", "cannot read")
    assert not [r.to_json() for r in rejects if r.reason.startswith(broken)]
    for sample in samples:
        VALIDATOR.validate(sample)
    assert "Which file defines `convert_codebase`?" in answers(samples)
    assert {"module", "function", "class"} <= {s["metadata"]["kind"] for s in samples}
    assert [s["id"] for s in samples] == [s["id"] for s in split_records(convert_codebase(package, source="afs"))[0]]
