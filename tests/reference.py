"""llama.cpp's own reference converter, from the llama-cpp-python source distribution.

Used where afs's converter is compared with it (tests/post/test_gguf.py) and by the post-training
benchmark; everything else converts with afs's own converter. Tests never download it:
``scripts/setup.sh`` fetches the sdist of the installed llama-cpp-python with pip and unpacks
``convert_hf_to_gguf.py`` with the ``conversion/`` and ``gguf-py/`` folders beside it (MIT, its
LICENSE kept beside them; about 2 MB, too much third-party code to vendor) into
``build/.cache/llama-cpp-python-src`` (or ``$AFS_LLAMA_CPP_SRC_CACHE``).
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
SDIST_CACHE = Path(os.environ.get("AFS_LLAMA_CPP_SRC_CACHE")
                   or REPO / "build" / ".cache" / "llama-cpp-python-src")
# The reference names a BPE pre-tokenizer by hashing the ids of a check text; the tiny test
# model's vocabulary is unknown to it, so it is told the name (what its
# convert_hf_to_gguf_update.py would add). Known tokenizers (SmolLM2) go through untouched.
SCRIPT = """
import runpy, sys
root, pre = sys.argv[1:3]
sys.path[:0] = [root, root + "/gguf-py"]
import conversion.base as base
known = base.TextModel.get_vocab_base_pre
def named(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        return pre
base.TextModel.get_vocab_base_pre = named
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[3:]]
runpy.run_path(root + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def llama_cpp_version() -> str:
    """The installed llama-cpp-python's version: the reference must be the same llama.cpp."""
    return metadata.version("llama-cpp-python")


def llama_cpp_tree() -> Optional[Path]:
    """The unpacked sdist's ``vendor/llama.cpp`` folder, or None when setup has not fetched it."""
    root = SDIST_CACHE / f"llama_cpp_python-{llama_cpp_version()}" / "vendor" / "llama.cpp"
    return root if (root / "convert_hf_to_gguf.py").is_file() else None


def missing() -> str:
    """What to do when the reference converter is not there."""
    return (f"llama.cpp's reference converter (llama-cpp-python {llama_cpp_version()} source "
            f"distribution) is not in {SDIST_CACHE}: run scripts/setup.sh, which fetches it with "
            "pip, or set AFS_LLAMA_CPP_SRC_CACHE to the folder it unpacked it into")


def require_tree() -> Path:
    """The reference's folder; fails the calling test (never skips it) when it is missing."""
    import pytest

    root = llama_cpp_tree()
    if root is None:
        pytest.fail(missing(), pytrace=False)
    return root


def command(root: Path, hf: Path, out: Path, *, pre: str = "qwen2", outtype: str = "f16") -> list[str]:
    """The command line that converts `hf` into `out` with the reference converter."""
    return [sys.executable, "-c", SCRIPT, str(root), pre, str(hf), "--outtype", outtype,
            "--outfile", str(out)]
