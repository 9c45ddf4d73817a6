"""llama.cpp's own reference converter, from the llama-cpp-python source distribution.

Used where afs's converter is compared with it (tests/post/test_gguf.py) and by the post-training
benchmark; everything else converts with afs's own converter. The sdist is downloaded once into
``$AFS_LLAMA_CPP_SRC_CACHE`` (default /tmp/lcpp-src).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Optional

LLAMA_CPP_VERSION = "0.3.36"
SDIST_CACHE = Path(os.environ.get("AFS_LLAMA_CPP_SRC_CACHE", "/tmp/lcpp-src"))
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


def llama_cpp_tree() -> Optional[Path]:
    """The sdist's ``vendor/llama.cpp`` folder (downloading it once), or None if unavailable."""
    root = SDIST_CACHE / f"llama_cpp_python-{LLAMA_CPP_VERSION}" / "vendor" / "llama.cpp"
    if not (root / "convert_hf_to_gguf.py").is_file():
        archive = SDIST_CACHE / f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz"
        if not archive.is_file():
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                            "--no-deps", f"llama-cpp-python=={LLAMA_CPP_VERSION}", "-d",
                            str(SDIST_CACHE)], capture_output=True, check=False)
        if archive.is_file():
            with tarfile.open(archive) as tar:
                tar.extractall(SDIST_CACHE, filter="data")
    return root if (root / "convert_hf_to_gguf.py").is_file() else None


def command(root: Path, hf: Path, out: Path, *, pre: str = "qwen2", outtype: str = "f16") -> list[str]:
    """The command line that converts `hf` into `out` with the reference converter."""
    return [sys.executable, "-c", SCRIPT, str(root), pre, str(hf), "--outtype", outtype,
            "--outfile", str(out)]
