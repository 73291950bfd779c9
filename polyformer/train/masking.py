"""BERT's masked-language-model corruption: choose 15% of tokens, then 80/10/10.

Each non-special position is chosen with probability ``probability`` (Devlin et al.: 0.15). A
chosen position becomes the mask token with probability 0.8, a token drawn uniformly from the
vocabulary with probability 0.1, and stays as it was with probability 0.1 — so that the model
cannot learn that only ``[MASK]`` positions matter. Its label is the original token; every other
label is -100, which the loss ignores.

The random numbers are drawn in a fixed order from a NumPy generator the caller keys (the trainer
keys it by seed, step and batch position), so a resumed run masks exactly the same positions.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
from torch import Tensor

from polyformer.errors import ConfigError

IGNORE_INDEX = -100
MASK_FRACTION, RANDOM_FRACTION = 0.8, 0.1  # of the chosen positions; the rest keep their token


def mask_tokens(ids: Tensor, generator: np.random.Generator, vocab_size: int, mask_token_id: int,
                probability: float = 0.15, special_ids: Iterable[int] = ()) -> tuple[Tensor, Tensor]:
    """``(input_ids, labels)`` for masked-LM training from token ids ``ids`` (B, T).

    Draws, in this order, ``generator.random(shape)`` (is the position chosen),
    ``generator.random(shape)`` (mask / random / keep) and ``generator.integers(0, vocab_size,
    shape)`` (the random replacements). ``special_ids`` (CLS, SEP, padding ...) are never chosen.
    """
    if not 0.0 < probability < 1.0:
        raise ConfigError(f"masking probability must be in (0, 1), got {probability}")
    if not 0 <= mask_token_id < vocab_size:
        raise ConfigError(f"mask_token_id {mask_token_id} is outside the vocabulary of {vocab_size} tokens; "
                          "give the tokenizer's [MASK] id")
    original = ids.numpy() if ids.dtype == torch.int64 else ids.long().numpy()
    shape = original.shape
    chosen_draw = generator.random(shape)
    kind_draw = generator.random(shape)
    replacements = generator.integers(0, vocab_size, size=shape)
    chosen = chosen_draw < probability
    special = list(special_ids)
    if special:
        chosen &= ~np.isin(original, special)
    to_mask = chosen & (kind_draw < MASK_FRACTION)
    to_random = chosen & (kind_draw >= MASK_FRACTION) & (kind_draw < MASK_FRACTION + RANDOM_FRACTION)
    inputs = np.where(to_mask, mask_token_id, np.where(to_random, replacements, original))
    labels = np.where(chosen, original, IGNORE_INDEX)
    return torch.from_numpy(inputs.astype(np.int64)), torch.from_numpy(labels.astype(np.int64))
