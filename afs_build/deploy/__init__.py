"""Deployment: LM Studio and Ollama files, and the served OpenAI-compatible endpoints."""
