"""Post-training: merge, GGUF conversion with parity checks, quantization."""
