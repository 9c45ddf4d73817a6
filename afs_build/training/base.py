"""Base models for training, one module per seam; this one keeps the old import path working.

- :mod:`.embedded`: the table of embedded models (GGUF files inside Python packages)
- :mod:`.unpack`: unpacking an embedded GGUF into a trainable Hugging Face folder
- :mod:`.inspection`: the checks of a base (architecture, sizes, chat template, stop tokens),
  for local folders and for a hub model's fetched small files
- :mod:`.digest`: parameter counts and a cheap content digest of a base folder

New code imports the module it needs; ``from afs_build.training.base import ...`` still works.
"""

from .digest import base_digest, safetensors_params
from .embedded import EMBEDDED, EmbeddedModel, embedded, locate_embedded
from .inspection import BaseModelError, hub_report, inspect_base
from .unpack import materialize_embedded

__all__ = ["EMBEDDED", "BaseModelError", "EmbeddedModel", "base_digest", "embedded", "hub_report",
           "inspect_base", "locate_embedded", "materialize_embedded", "safetensors_params"]
