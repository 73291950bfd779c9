"""Hugging Face checkpoints <-> polyformer: literal key maps and checkpoint files."""

from polyformer.convert.checkpoint import load_state_dict, save_state_dict
from polyformer.convert.keymap import KeyMap, Rule, check_state_dict, split_rows, transpose

__all__ = ["KeyMap", "Rule", "check_state_dict", "load_state_dict", "save_state_dict", "split_rows", "transpose"]
