"""afs: turn data into small specialist language models that run on your own machine."""

__version__ = "0.1.0"
