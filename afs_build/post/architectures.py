"""The model architectures afs's GGUF converter writes, and what a GGUF of each holds.

A light module: validation imports :data:`FAMILIES`, so nothing heavy is imported at the top
(``gguf`` only inside the functions that write).

HF architecture -> (GGUF architecture, whether q/k rows are permuted for llama.cpp's rope).
Llama checkpoints store q/k in the "half-rotated" order HF's rotary code expects; llama.cpp's
LLAMA rope wants interleaved pairs (the reference's `LlamaModel.permute`). Qwen2 uses NEOX
rope in llama.cpp, which matches HF's layout as it is.
"""

from __future__ import annotations

from typing import Any

from ..errors import StageError, one_of

FAMILIES = {
    "LlamaForCausalLM": ("llama", True),
    "Qwen2ForCausalLM": ("qwen2", False),
}


def family(config: dict) -> tuple[str, str, bool]:
    """``(HF architecture, GGUF architecture, permute q/k)`` of a config, or a StageError."""
    archs = config.get("architectures") or [config.get("model_type", "?")]
    hf_arch = archs[0]
    if hf_arch not in FAMILIES:
        raise StageError(f"cannot convert architecture {hf_arch!r} to GGUF: afs's converter "
                         f"supports {one_of(FAMILIES)}")
    return (hf_arch, *FAMILIES[hf_arch])


def rope_theta(config: dict) -> float:
    """The rope base; a config with rope scaling is refused (its GGUF would answer wrongly)."""
    rope = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    kind = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise StageError(f"cannot convert a model with rope scaling {kind!r} to GGUF: afs's "
                         "converter supports plain rope only")
    return float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))


def add_hparams(writer, config: dict, arch: str, name: str, ftype) -> None:
    """The model's shape keys, as the reference converter writes them for `arch`."""
    heads = config["num_attention_heads"]
    writer.add_type("model")
    writer.add_name(name)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    if (head_dim := config.get("head_dim")) is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(ftype)
    if arch == "llama":
        writer.add_vocab_size(config["vocab_size"])
        writer.add_rope_dimension_count(head_dim or config["hidden_size"] // heads)
    writer.add_quantization_version(2)  # GGML_QNT_VERSION, as the reference writes it


def plan_tensors(config: dict, arch: str, qtype) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Every tensor the GGUF will hold, in file order: ``{name: (numpy shape, GGML type)}``.

    Known before the first tensor arrives, so the header is written first and each tensor
    goes straight to its place in the file, whatever order the stream brings them in. It is
    also the check that the stream is complete and that the weights fit config.json.
    As the reference: 1-D tensors and norms stay F32 (llama.cpp expects them so).
    """
    import gguf

    h, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    q, kv = heads * head_dim, config.get("num_key_value_heads", heads) * head_dim
    ff, vocab = config["intermediate_size"], config["vocab_size"]
    attn_bias = arch == "qwen2" or bool(config.get("attention_bias"))
    plan = {"token_embd.weight": (vocab, h)}
    for i in range(config["num_hidden_layers"]):
        b = f"blk.{i}."
        plan.update({b + "attn_norm.weight": (h,), b + "attn_q.weight": (q, h),
                     b + "attn_k.weight": (kv, h), b + "attn_v.weight": (kv, h),
                     b + "attn_output.weight": (h, q)})
        if attn_bias:  # Qwen2 biases q, k and v; a Llama with attention_bias all four
            plan.update({b + "attn_q.bias": (q,), b + "attn_k.bias": (kv,), b + "attn_v.bias": (kv,)})
            if arch == "llama":
                plan[b + "attn_output.bias"] = (h,)
        plan.update({b + "ffn_norm.weight": (h,), b + "ffn_gate.weight": (ff, h),
                     b + "ffn_up.weight": (ff, h), b + "ffn_down.weight": (h, ff)})
        if arch == "llama" and config.get("mlp_bias"):
            plan.update({b + "ffn_gate.bias": (ff,), b + "ffn_up.bias": (ff,), b + "ffn_down.bias": (h,)})
    plan["output_norm.weight"] = (h,)
    if not config.get("tie_word_embeddings", False):
        plan["output.weight"] = (vocab, h)
    f32 = gguf.GGMLQuantizationType.F32
    return {name: (shape, f32 if len(shape) == 1 or name.endswith("_norm.weight") else qtype)
            for name, shape in plan.items()}


def permute_qk(weights, n_head: int):
    """Reorder q/k rows from HF's rotate-half layout to llama.cpp's interleaved rope layout."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))
