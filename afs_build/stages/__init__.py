"""Pipeline stages: one module each, exposing ``NAME`` and ``tasks(manifest)``."""
