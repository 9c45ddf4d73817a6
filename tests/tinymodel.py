"""Tiny real models for tests: a random-init Qwen2 causal LM with its own byte-level BPE tokenizer.

Hidden size 256 and intermediate size 256 (2 layers, about 1.3M parameters with a 1k vocab) is
the smallest shape whose tensors llama.cpp's k-quants take without falling back to another
type. The tokenizer is trained with Qwen2's own pre-tokenizer split rules, because transformers
loads any ``model_type: qwen2`` tokenizer with those rules whatever ``tokenizer.json`` says, and
llama.cpp tokenizes a ``qwen2`` pre-type with them too: the three then agree. The chat template
is ChatML with ``{% generation %}`` markers around assistant turns, so assistant-only losses can
find the answer tokens.

    folder = build_tiny_model(tmp_path / "tiny")      # config, weights, tokenizer, template
"""

from __future__ import annotations

import json
from pathlib import Path

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

CORPUS = [
    "The SNES has a 65816 CPU. Register $2100 is INIDISP and $420B starts DMA.",
    "What is 12 plus 30? 12 plus 30 is 42. What is 7 times 6? It is 42 too.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Mode 7 rotates and scales one background layer. HDMA changes registers per scanline.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "You are a helpful assistant. Answer briefly and precisely.",
    "LDA #$80\nSTA $2100\nREP #$20\nSEP #$10\nXCE\nRTS",
    "Debugging: read the error, reproduce it, bisect, fix, and add a test.",
    "Unicode: café, naïve, 東京, emoji 🙂, tabs\tand  double  spaces.",
]


def train_tokenizer(vocab_size: int = 1024):
    """A byte-level BPE tokenizer with Qwen2's split rules and ChatML special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    return tokenizer


def build_tiny_model(folder: Path, *, seed: int = 0, hidden: int = 256, intermediate: int = 256,
                     layers: int = 2) -> Path:
    """Write a tiny Qwen2 model folder (config, safetensors, tokenizer, chat template)."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = train_tokenizer()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>", bos_token=None,
                                        unk_token=None, add_bos_token=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    _pin_tokenizer_config(folder)

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=1024, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), torch_dtype="float32")
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(folder)
    return folder


def tiny_gguf(folder: Path, *, hidden: int = 256, outtype: str = "F16") -> Path:
    """A tiny model of `hidden` size as a GGUF file (afs's converter), its HF folder beside it."""
    from afs_build.post.gguf_convert import convert_folder

    folder = Path(folder)
    hf = build_tiny_model(folder / "hf", hidden=hidden)
    out = folder / f"tiny-{outtype}.gguf"
    convert_folder(hf, out, outtype=outtype, name="tiny")
    return out


def _pin_tokenizer_config(folder: Path) -> None:
    """Write add_bos_token explicitly (llama.cpp's BPE default would add a BOS otherwise)."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(add_bos_token=False, add_eos_token=False, chat_template=CHAT_TEMPLATE,
                  tokenizer_class="Qwen2Tokenizer", model_max_length=1024)
    path.write_text(json.dumps(config, indent=2))
