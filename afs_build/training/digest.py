"""Cheap facts about a base folder's weights: parameter counts and a content digest.

Both read safetensors headers and a few samples of each weight file, never the tensors, so
they stay fast for models of many gigabytes.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Optional

from ..errors import StageError

TEXT_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".tiktoken")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack")
SAMPLES, SAMPLE_BYTES = 16, 64 * 1024


def _safetensors_header(path: Path) -> bytes:
    with open(path, "rb") as handle:
        head = handle.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < size < 100 * 2**20:
            raise StageError(f"{path}: not a safetensors file (header size {size}); "
                             f"save the weights again with safetensors")
        return handle.read(size)


def safetensors_params(folder: Path) -> Optional[int]:
    """Parameters in the folder's safetensors files, from their headers (no tensor is read)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        for name, entry in json.loads(_safetensors_header(path)).items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total


def base_digest(folder: Path) -> str:
    """A content digest of a base folder, cheap enough for models of many gigabytes.

    Hashed: every top-level config, tokenizer and template file in full (*.json, *.jinja,
    *.txt, *.model, *.tiktoken); for weight files, their size, the safetensors header (names,
    dtypes, shapes, offsets) and 16 samples of 64 KiB spread over the file, so about 1 MiB is
    read per file. A weight file rewritten with a change that misses every sample and keeps its
    shapes is not noticed; re-save the folder elsewhere to force a rebuild. Timestamps do not
    count: a touched file leaves the digest as it is. Other files (README.md) are ignored.
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.name.endswith(WEIGHT_SUFFIXES):
            digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
            if path.suffix == ".safetensors":
                digest.update(_safetensors_header(path))
            digest.update(_samples(path))
        elif path.name.endswith(TEXT_SUFFIXES):
            digest.update(f"{path.name}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _samples(path: Path) -> bytes:
    size = path.stat().st_size
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for k in range(SAMPLES):
            handle.seek(max(0, (size - SAMPLE_BYTES) * k // (SAMPLES - 1)))
            hasher.update(handle.read(SAMPLE_BYTES))
    return hasher.digest()
