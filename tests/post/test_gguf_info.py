"""afs's fast GGUF header reader against gguf-py's GGUFReader, on files gguf-py writes."""

from __future__ import annotations

import numpy as np
import pytest

from afs_build.errors import StageError
from afs_build.post import gguf_info

import gguf  # noqa: E402  (required: a declared dependency must fail, not skip, when missing)


def write(path, endianess=None):
    writer = gguf.GGUFWriter(str(path), "llama", **({"endianess": endianess} if endianess else {}))
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -5)
    writer.add_uint16("t.u16", 60000)
    writer.add_int16("t.i16", -300)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -70000)
    writer.add_float32("t.f32", 0.25)
    writer.add_bool("t.bool", True)
    writer.add_uint64("t.u64", 2**40)
    writer.add_int64("t.i64", -(2**40))
    writer.add_float64("t.f64", 1e-9)
    writer.add_string("t.str", "héllo <|im_end|>")
    writer.add_array("t.ints", [1, 2, 3])
    writer.add_array("t.words", ["a", "bé", ""])
    writer.add_tensor("w.f32", np.ones((4, 8), dtype=np.float32))
    writer.add_tensor("w.f16", np.ones((2, 3, 16), dtype=np.float16))
    writer.add_tensor("b.f32", np.zeros(5, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("endian", ["little", "big"])
def test_same_fields_and_tensors_as_gguf_py(tmp_path, endian):
    big = endian == "big"
    path = write(tmp_path / "m.gguf", gguf.GGUFEndian.BIG if big else None)
    info = gguf_info.read(path, arrays=["t.words"])
    reader = gguf.GGUFReader(path)
    assert [(t.name, t.type, t.shape) for t in info.tensors] == [
        (t.name, t.tensor_type.name, tuple(int(n) for n in t.shape)) for t in reader.tensors]
    assert [t.shape for t in info.tensors] == [(8, 4), (16, 3, 2), (5,)]  # ne[0] first
    expected = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert info.fields.pop("t.f32") == pytest.approx(expected.pop("t.f32"))
    assert info.fields.pop("t.f64") == pytest.approx(expected.pop("t.f64"))
    assert info.fields["t.words"] == ["a", "bé", ""]
    assert info.array_lengths == {"t.ints": 3, "t.words": 3}
    assert {k: v for k, v in expected.items() if k != "t.ints"} == info.fields
    assert info.fields["t.str"] == "héllo <|im_end|>" and info.fields["t.bool"] is True


def test_damaged_and_foreign_files_say_so(tmp_path):
    path = write(tmp_path / "m.gguf")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(StageError, match=r"cut.gguf: the GGUF header is damaged or cut short"):
        gguf_info.read(cut)
    other = tmp_path / "model.safetensors"
    other.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(StageError, match=r"model.safetensors: not a GGUF file"):
        gguf_info.read(other)
    with pytest.raises(StageError, match=r"missing.gguf: cannot read the GGUF file"):
        gguf_info.read(tmp_path / "missing.gguf")
