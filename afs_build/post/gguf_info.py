"""A GGUF file's metadata and tensor directory, read fast: no tensor data, no numpy views.

gguf-py's ``GGUFReader`` builds numpy views of every part of every metadata field; on a
49k-token vocabulary that takes about 3 s a file, and afs reads each quantized file back
several times. This walks the header once with ``struct``: scalars and strings are kept,
arrays only where asked for by key (the others are skipped, their length kept), then the tensor
directory (name, ggml type, shape in ggml's order, ``ne[0]`` first, as ``GGUFReader`` gives it).

Layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic ``GGUF``, version
(uint32, 2 or 3), tensor count and metadata count (uint64); each metadata entry a string key, a
uint32 value type and the value; each tensor a string name, uint32 dimension count, uint64
dimensions, uint32 type, uint64 offset. Strings are a uint64 length and UTF-8 bytes. A file
written big-endian is recognized by its byte-swapped version.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import StageError

# value type -> struct format of a scalar
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class Tensor:
    name: str
    type: str  # ggml type name: F16, Q8_0, Q4_K, ...
    shape: tuple[int, ...]  # ne[0] first


@dataclass
class GGUFInfo:
    version: int
    fields: dict[str, Any] = field(default_factory=dict)  # scalars, strings and the arrays asked for
    array_lengths: dict[str, int] = field(default_factory=dict)  # every array's length
    tensors: list[Tensor] = field(default_factory=list)


class _Cursor:
    def __init__(self, buffer, order: str):
        self.buffer, self.order, self.at = buffer, order, 0

    def take(self, fmt: str):
        value = struct.unpack_from(self.order + fmt, self.buffer, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        size = self.take("Q")
        start, self.at = self.at, self.at + size
        if self.at > len(self.buffer):
            raise ValueError("a string runs past the end of the file")
        return bytes(self.buffer[start:self.at]).decode("utf-8", "replace")

    def value(self, kind: int, keep: bool):
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.take("I"), self.take("Q")
            if item in _SCALARS and not keep:  # skip without reading each element
                self.at += count * struct.calcsize(_SCALARS[item])
                return count
            values = [self.value(item, keep) for _ in range(count)]
            return values if keep else count
        raise ValueError(f"unknown metadata value type {kind}")


def read(path: Path, arrays: Iterable[str] = ()) -> GGUFInfo:
    """The metadata (arrays only those named in `arrays`) and tensor directory of a GGUF file."""
    from gguf import GGMLQuantizationType

    path, wanted = Path(path), set(arrays)
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            if buffer[:4] != b"GGUF":
                raise StageError(f"{path}: not a GGUF file (it does not start with 'GGUF')")
            order = "<" if struct.unpack_from("<I", buffer, 4)[0] < 0x10000 else ">"
            cursor = _Cursor(buffer, order)
            cursor.at = 4
            info = GGUFInfo(version=cursor.take("I"))
            if info.version < 2:
                raise StageError(f"{path}: GGUF version {info.version} is too old; convert the model again")
            n_tensors, n_fields = cursor.take("Q"), cursor.take("Q")
            for _ in range(n_fields):
                key, kind = cursor.string(), cursor.take("I")
                value = cursor.value(kind, keep=key in wanted)
                if kind == _ARRAY:
                    info.array_lengths[key] = len(value) if isinstance(value, list) else value
                    if key in wanted:
                        info.fields[key] = value
                else:
                    info.fields[key] = value
            for _ in range(n_tensors):
                name, dims = cursor.string(), cursor.take("I")
                shape = tuple(cursor.take("Q") for _ in range(dims))
                kind = cursor.take("I")
                cursor.take("Q")  # offset into the data section
                try:
                    type_name = GGMLQuantizationType(kind).name
                except ValueError:
                    type_name = f"type{kind}"
                info.tensors.append(Tensor(name, type_name, shape))
            return info
    except (struct.error, ValueError) as err:
        raise StageError(f"{path}: the GGUF header is damaged or cut short ({err})") from None
    except OSError as err:
        raise StageError(f"{path}: cannot read the GGUF file: {err.strerror or err}") from None
