"""The model architectures afs's GGUF converter writes (a light module: validation imports it).

HF architecture -> (GGUF architecture, whether q/k rows are permuted for llama.cpp's rope).
Llama checkpoints store q/k in the "half-rotated" order HF's rotary code expects; llama.cpp's
LLAMA rope wants interleaved pairs (the reference's `LlamaModel.permute`). Qwen2 uses NEOX
rope in llama.cpp, which matches HF's layout as it is.
"""

FAMILIES = {
    "LlamaForCausalLM": ("llama", True),
    "Qwen2ForCausalLM": ("qwen2", False),
}
