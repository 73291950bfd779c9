"""Errors polyformer raises for bad input: each message names the argument and the fix."""

from __future__ import annotations


class PolyformerError(Exception):
    """Base class of every error polyformer raises on purpose."""


class ConfigError(PolyformerError, ValueError):
    """An option, argument or configuration value is invalid."""


class ShapeError(PolyformerError, ValueError):
    """A tensor has the wrong shape, dtype or device for the call."""


class CheckpointError(PolyformerError, ValueError):
    """A checkpoint or weight file is missing, corrupt or does not match the model."""


class DataError(PolyformerError, ValueError):
    """An input file or data set is unreadable, empty or has invalid values."""
