"""Write one GGUF file from a stream of tensors: a Hugging Face causal LM, a LoRA merged in.

afs's own converter on the `gguf` package. It takes the tensors as an iterator of
``(HF name, array)``, so the LoRA can be merged into each tensor as it goes by
(:func:`afs_build.post.merge.merged_tensors`) and nothing but one tensor is held in memory: no
merged copy of the model is ever written. GGUF puts the tensor table before the data; the table
follows from config.json (:func:`~afs_build.post.architectures.plan_tensors`), so the header is
written first and each tensor is written once, at its place, in whatever order it arrives. The
file is renamed into place at the end, so a killed run leaves no file under the target's name
(and its temporary is removed by the next run: :func:`afs_build.atomic.remove_stale`).

It writes what llama.cpp's reference ``convert_hf_to_gguf.py`` writes for the same folder
(``tests/post/test_gguf.py`` compares the two). The parts: :mod:`.weights` reads the
safetensors, :mod:`.architectures` knows what each architecture's GGUF holds, :mod:`.vocab`
reads the tokenizer; this module encodes and writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from ..atomic import atomic_path
from ..errors import StageError, one_of
from .architectures import add_hparams, family, permute_qk, plan_tensors
from .vocab import Vocab, add_vocab, read_vocab, vocab_facts
from .weights import read_config, read_safetensors, to_numpy

OUTTYPES = ("F16", "BF16", "F32")
CHUNK = 1 << 24  # values converted at a time: a block of rows, never a whole float32 embedding


def encode(array: Any, qtype) -> np.ndarray:
    """`array` (torch or numpy, any float dtype) as GGML type `qtype`, a block of rows at a time.

    F16 goes through torch: the same round-to-nearest-even as numpy's ``astype`` (the reference
    converter's), several times faster.
    """
    import gguf
    import torch

    f16 = qtype == gguf.GGMLQuantizationType.F16
    if array.ndim <= 1:
        blocks, step = [array], None
    else:
        step = max(1, CHUNK // max(1, int(np.prod(array.shape[1:]))))
        blocks = (array[i:i + step] for i in range(0, array.shape[0], step))
    out = None
    for i, block in enumerate(blocks):
        if f16:
            block = torch.as_tensor(block).to(torch.float16).numpy()
        else:
            block = gguf.quants.quantize(np.asarray(to_numpy(block), dtype=np.float32), qtype)
        if step is None:
            return block
        if out is None:
            out = np.empty((array.shape[0], *block.shape[1:]), dtype=block.dtype)
        out[i * step:i * step + len(block)] = block
    return out


def nbytes(shape: tuple[int, ...], qtype) -> int:
    """Bytes of a tensor of `shape` stored as GGML type `qtype`."""
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return int(np.prod(shape)) // block * size


def convert(config: dict, tokenizer_folder: Path, tensors: Iterable[tuple[str, Any]], out: Path,
            *, outtype: str = "F16", name: str) -> dict:
    """Write `tensors` (HF names, streamed) and the tokenizer as one GGUF file at `out`.

    Norms, biases and other 1-D tensors stay F32; 2-D weights take `outtype`. Returns a
    JSON-ready report. Raises StageError for an unsupported architecture, tokenizer, outtype,
    an unknown tensor name or a stream that misses tensors.
    """
    import gguf

    if outtype not in OUTTYPES:
        raise StageError(f"GGUF outtype {outtype!r} is not supported; expected one of: "
                         f"{one_of(OUTTYPES)} (quantize afterwards for Q8_0, Q4_K_M, ...)")
    hf_arch, arch, permute = family(config)
    ftype = {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
             "BF16": gguf.LlamaFileType.MOSTLY_BF16}[outtype]
    qtype = gguf.GGMLQuantizationType[outtype]
    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_head)
    tied = bool(config.get("tie_word_embeddings", False))
    vocab = read_vocab(tokenizer_folder, config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config["num_hidden_layers"])

    plan = plan_tensors(config, arch, qtype)
    out = Path(out)
    with atomic_path(out) as tmp:
        data_start, offsets, params = write_header(tmp, config, arch, name, ftype, plan, vocab)
        written: set[str] = set()
        with open(tmp, "r+b") as f:
            for hf_name, array in tensors:
                if hf_name.endswith(".rotary_emb.inv_freq"):
                    continue
                if tied and hf_name == "lm_head.weight":
                    continue  # llama.cpp reuses token_embd when output.weight is absent
                new_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if new_name is None or new_name not in plan:
                    raise StageError(f"cannot convert tensor {hf_name!r} of a {hf_arch} to GGUF: "
                                     "the name is not part of this architecture"
                                     + ("" if new_name is None else " as config.json describes it"))
                shape, qt = plan[new_name]
                if tuple(array.shape) != shape or new_name in written:
                    raise StageError(f"cannot convert tensor {hf_name!r} to GGUF: " + (
                        "it came twice" if new_name in written else
                        f"its shape {list(array.shape)} is not {list(shape)}, which config.json "
                        "implies"))
                if permute and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                    array = permute_qk(to_numpy(array), n_head)
                elif permute and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                    array = permute_qk(to_numpy(array), n_kv)
                data = encode(array, qt)
                del array  # one tensor in two forms at most
                f.seek(data_start + offsets[new_name])
                data.tofile(f)
                written.add(new_name)
                del data
            missing = [n for n in plan if n not in written]
            if missing:
                raise StageError(f"cannot write {out}: the {hf_arch} tensors are incomplete; "
                                 f"missing {len(missing)}: {', '.join(missing[:8])}"
                                 f"{' ...' if len(missing) > 8 else ''}")
            f.truncate(data_start + offsets[""])  # the padding after the last tensor
        size = os.path.getsize(tmp)
    types: dict[str, int] = {}
    for _, qt in plan.values():
        types[qt.name] = types.get(qt.name, 0) + 1
    return {
        "file": str(out), "name": name, "architecture": arch, "hf_architecture": hf_arch,
        "outtype": outtype, "tensors": len(plan), "tensor_types": dict(sorted(types.items())),
        "parameters": params, "bytes": size, "tied_embeddings": tied,
        "context_length": config["max_position_embeddings"], "tokenizer": vocab_facts(vocab),
    }


def write_header(path: Path, config: dict, arch: str, name: str, ftype, plan: dict,
                 vocab: Vocab) -> tuple[int, dict[str, int], int]:
    """Write the GGUF header, keys and tensor table; ``(data start, {tensor: offset}, params)``.

    Offsets are relative to the data start and padded as GGUFWriter pads them; the key ``""``
    holds the end of the data.
    """
    import gguf

    writer = gguf.GGUFWriter(path, arch)
    offsets, end = {}, 0
    for tensor, (shape, qtype) in plan.items():
        size = nbytes(shape, qtype)
        writer.add_tensor_info(tensor, shape, np.float32, size, raw_dtype=qtype)
        offsets[tensor] = end
        end += gguf.GGUFWriter.ggml_pad(size, writer.data_alignment)
    offsets[""] = end
    add_hparams(writer, config, arch, name, ftype)
    params = writer.get_total_parameter_count()
    writer.add_size_label(gguf.size_label(*params))
    add_vocab(writer, vocab)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
    finally:
        writer.close()
    return gguf.GGUFWriter.ggml_pad(os.path.getsize(path), writer.data_alignment), offsets, params[0]


def convert_folder(hf_folder: Path, out: Path, *, outtype: str = "F16", name: str,
                   adapter: Optional[Path] = None) -> dict:
    """Convert a saved HF folder (config, safetensors, tokenizer), reading tensors lazily.

    With `adapter` (a peft LoRA folder), the adapter is merged into each tensor as it streams
    by; the tokenizer is the base folder's, which training does not change.
    """
    hf_folder = Path(hf_folder)
    config = read_config(hf_folder)
    if adapter is None:
        return convert(config, hf_folder, read_safetensors(hf_folder), out, outtype=outtype, name=name)
    from .merge import merged_tensors

    return convert(config, hf_folder, merged_tensors(hf_folder, Path(adapter)), out,
                   outtype=outtype, name=name)
