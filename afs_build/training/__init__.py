"""Training: base models, the rendered LoRA training script, and where it runs (local, SkyPilot)."""
