"""Helpers for the retrieval tests: a tiny random BERT embedder and small projects with an index.

The tiny BERT (2 layers, 32 wide, a WordPiece vocabulary trained here) loads with
transformers exactly as a sentence-transformers folder does, in well under a second; its
embeddings carry no meaning, so tests of what dense search *finds* use the real
all-MiniLM-L6-v2 (tests/retrieval/test_retrieval_minilm.py) and these test the plumbing.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from afs_build.manifest import Manifest, load

CORPUS = [
    "def add(a, b): return a + b", "class Decontaminator: drop samples that match questions",
    "The SNES register INIDISP at $2100 sets the brightness and forced blank.",
    "Which file defines the function? Where is the class written?",
    "minhash signatures find near duplicates", "atomic writes rename a temporary file",
]


def build_tiny_bert(folder: Path) -> Path:
    """A random-init BertModel with its own WordPiece tokenizer, saved as a model folder."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    raw.train_from_iterator(CORPUS * 10, trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False))
    vocab = [t for t, _ in sorted(raw.get_vocab().items(), key=lambda kv: kv[1])]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    return folder


CODE = {
    "code/dedup.py": '''"""Near-duplicate detection."""

import numpy as np


def minhash_signatures(texts, num_perm):
    """MinHash signatures of character shingles."""
    return [hash(t) for t in texts]


class DedupIndex:
    """Collects samples and finds duplicates."""

    def add(self, sample):
        self.samples.append(sample)
''',
    "code/atomic.py": '''"""Atomic writes."""


def write_json(target, value):
    """Write under a temporary name and rename it into place."""
    return target
''',
    "code/docs/guide.md": "# Guide\n\nHow to start.\n\n## Install\n\nRun the setup script.\n",
}


def write_project(root: Path, *, files: dict | None = None, index: dict | None = None,
                  specialists: dict | None = None, extra: dict | None = None) -> Manifest:
    """A project whose index `code` reads the codebase source `code/` with the tiny BERT."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in {**CODE, **(files or {})}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text, encoding="utf-8")
    build_tiny_bert(root / "tiny-bert")
    (root / "chat.jsonl").write_text(json.dumps({"instruction": "What is 2 plus 2?", "output": "4."}) + "\n")
    data = {
        "project": {"name": "demo"},
        "models": {"tiny": {"embedded": "smollm2-135m-instruct"}},
        "hardware": {"cpu": {"vram_gb": 8}},
        "sources": {"code": {"kind": "codebase", "path": "code", "include": ["**/*"]},
                    "chat": {"kind": "custom", "path": "chat.jsonl", "format": "alpaca"}},
        "mixes": {"general": {"samples": 4, "groups": {"all": {"share": 1.0, "sources": ["chat"]}}}},
        "specialists": specialists or {"alpha": {"role": "A", "base": "tiny", "mix": "general", "hardware": "cpu", "port": 6101}},
        "retrieval": {"indexes": {"code": {"sources": ["code"], "embedding": {"path": "tiny-bert"},
                                           **(index or {})}}},
        **(extra or {}),
    }
    (root / "afs.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load(root / "afs.yaml")
