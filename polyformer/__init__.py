"""polyformer: transformers along three axes — scaling laws, efficient attention, beyond text."""

__version__ = "0.1.0"
