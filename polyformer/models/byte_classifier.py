"""A small byte-level text classifier on the transformer core (Long Range Arena's text task).

Bytes 0–255 are tokens; two specials follow them: ``PAD_ID`` (256) and ``CLS_ID`` (257). The model
is a byte embedding plus positions (learned or sinusoidal), an :class:`~polyformer.transformer.Encoder`
with any registered attention mechanism, a pooling step (the mean over real tokens, or the CLS
token at position 0) and a linear head. It is a plain ``nn.Module`` (no Hugging Face checkpoint
exists for it); the config round-trips through JSON like every other config.

>>> config = ByteClassifierConfig(n_classes=2, max_length=64,
...                               transformer=TransformerConfig(d_model=32, n_heads=2, n_layers=1))
>>> model = ByteClassifier(config)
>>> ids, mask = model.encode([b"hello", "a longer text"], length=16)
>>> model(ids, mask).shape
torch.Size([2, 2])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyformer.errors import ConfigError, ShapeError
from polyformer.layers.embeddings import TokenEmbedding
from polyformer.layers.positions import LearnedPositions, SinusoidalPositions
from polyformer.options import require
from polyformer.transformer import Encoder, TransformerConfig

PAD_ID = 256
CLS_ID = 257
VOCAB_SIZE = 258  # 256 bytes + PAD + CLS

POSITION_KINDS = ("learned", "sinusoidal")
POOLING_KINDS = ("mean", "cls")


def _lra_text_core() -> TransformerConfig:
    # Long Range Arena's text-classification model: 4 layers, width 256, 4 heads, MLP 1024.
    return TransformerConfig(d_model=256, n_heads=4, n_layers=4, d_ff=1024)


@dataclass
class ByteClassifierConfig:
    """Everything the classifier needs; ``transformer`` is the core's own config.

    ``n_classes``: outputs of the head. ``max_length``: longest input (size of the learned position
    table; sinusoidal positions only use it for input checks). ``positions``: "learned" or
    "sinusoidal". ``pooling``: "mean" (average over real tokens) or "cls" (the token at position 0,
    which :meth:`ByteClassifier.encode` sets to ``CLS_ID``).
    """

    n_classes: int = 2
    max_length: int = 4096
    positions: str = "learned"
    pooling: str = "mean"
    transformer: TransformerConfig = field(default_factory=_lra_text_core)

    def __post_init__(self) -> None:
        if isinstance(self.transformer, dict):
            self.transformer = TransformerConfig.from_dict(self.transformer)
        require(isinstance(self.transformer, TransformerConfig),
                f"transformer must be a TransformerConfig or its dict, got {type(self.transformer).__name__}")
        for name in ("n_classes", "max_length"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                    f"{name} must be a positive integer, got {value!r}")
        require(self.positions in POSITION_KINDS,
                f"positions must be one of {', '.join(POSITION_KINDS)}, got {self.positions!r}")
        require(self.pooling in POOLING_KINDS,
                f"pooling must be one of {', '.join(POOLING_KINDS)}, got {self.pooling!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` rebuilds an equal config."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["transformer"] = self.transformer.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ByteClassifierConfig":
        """Rebuild a config from :meth:`to_dict`'s output; unknown keys raise a ConfigError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"ByteClassifierConfig: unknown field(s) {', '.join(unknown)}; "
                              f"valid fields: {', '.join(sorted(known))}")
        return cls(**values)


class ByteClassifier(nn.Module):
    """Bytes -> class scores: embedding + positions, an :class:`Encoder`, pooling, a linear head."""

    def __init__(self, config: ByteClassifierConfig) -> None:
        super().__init__()
        self.config = config
        d_model = config.transformer.d_model
        self.embed = TokenEmbedding(VOCAB_SIZE, d_model)
        if config.positions == "learned":
            self.positions: nn.Module = LearnedPositions(config.max_length, d_model)
        else:
            self.positions = SinusoidalPositions(d_model)
        self.encoder = Encoder(config.transformer)
        self.head = nn.Linear(d_model, config.n_classes)

    def encode(self, texts: Sequence[bytes | str], length: int) -> tuple[Tensor, Tensor]:
        """Texts (bytes, or str encoded as UTF-8) -> ``ids`` (B, length) and ``mask`` (B, length).

        Each text is cut or padded with ``PAD_ID`` to ``length`` tokens, a ``CLS_ID`` first when the
        config pools the CLS token. ``mask`` is True on real tokens.
        """
        return encode_bytes(texts, length, cls=self.config.pooling == "cls")

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """``ids`` (B, N) byte/special ids, ``mask`` (B, N) True = real token -> logits (B, n_classes)."""
        if ids.dim() != 2:
            raise ShapeError(f"ByteClassifier: ids must be (batch, length), got {tuple(ids.shape)}")
        b, n = ids.shape
        if n > self.config.max_length:
            raise ShapeError(f"ByteClassifier: input length {n} exceeds max_length={self.config.max_length}; "
                             "cut the input or build the model with a larger max_length")
        if mask is not None and tuple(mask.shape) != (b, n):
            raise ShapeError(f"ByteClassifier: mask must be (batch, length) = {(b, n)}, got {tuple(mask.shape)}")
        if mask is not None:
            mask = mask.bool()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= VOCAB_SIZE):
            raise ShapeError(f"ByteClassifier: ids must lie in 0..{VOCAB_SIZE - 1} (bytes, PAD_ID, CLS_ID), got "
                             f"{int(ids.min())}..{int(ids.max())}; build inputs with model.encode(texts, length)")
        positions = torch.arange(n, device=ids.device)
        h = self.embed(ids) + self.positions(positions).to(self.embed.weight.dtype)  # (B, N, d)
        # Without padding the mechanisms take their mask-free (fastest) path.
        key_padding_mask = None if mask is None or bool(mask.all()) else mask
        h = self.encoder(h, key_padding_mask=key_padding_mask)  # (B, N, d)
        return self.head(self.pool(h, mask))  # (B, n_classes)

    def pool(self, h: Tensor, mask: Tensor | None) -> Tensor:
        """(B, N, d) -> (B, d): the CLS token, or the mean over real tokens (padding excluded)."""
        if self.config.pooling == "cls":
            return h[:, 0]
        if mask is None:
            return h.mean(dim=1)
        weights = mask.to(h.dtype)[..., None]  # (B, N, 1)
        return (h * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def encode_bytes(texts: Sequence[bytes | str], length: int, *, cls: bool = False) -> tuple[Tensor, Tensor]:
    """Texts -> ``(ids, mask)``, both (B, length): bytes cut or padded with ``PAD_ID``.

    With ``cls`` the first token is ``CLS_ID`` and ``length - 1`` bytes follow.
    """
    require(isinstance(length, int) and length >= (2 if cls else 1),
            f"length must be an integer >= {2 if cls else 1}, got {length!r}")
    ids = torch.full((len(texts), length), PAD_ID, dtype=torch.long)
    start = 1 if cls else 0
    for row, text in enumerate(texts):
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        data = data[: length - start]
        if cls:
            ids[row, 0] = CLS_ID
        if data:
            ids[row, start : start + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    mask = ids != PAD_ID
    return ids, mask


def train_step(model: ByteClassifier, optimizer: torch.optim.Optimizer, ids: Tensor, labels: Tensor,
               mask: Tensor | None = None) -> float:
    """One training step: forward, cross-entropy, backward, optimizer step. Returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(ids, mask), labels)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def marker_task(batch: int, length: int, *, marker: int = 0, generator: torch.Generator | None = None,
                cls: bool = False) -> tuple[Tensor, Tensor]:
    """A synthetic task: does byte ``marker`` occur? -> ``(ids, labels)`` with balanced labels.

    Bytes are uniform over 1–255 (never the marker); sequences with label 1 get the marker at one
    random position (after the CLS token when ``cls``).
    """
    require(0 <= marker < 256, f"marker must be a byte value 0..255, got {marker!r}")
    start = 1 if cls else 0
    require(length > start, f"length must exceed {start}, got {length!r}")
    ids = torch.randint(0, 255, (batch, length), generator=generator)
    ids = ids + (ids >= marker).long()  # 0..254 -> the 255 byte values other than the marker
    labels = torch.randint(0, 2, (batch,), generator=generator)
    where = torch.randint(start, length, (batch,), generator=generator)
    rows = torch.nonzero(labels, as_tuple=True)[0]
    ids[rows, where[rows]] = marker
    if cls:
        ids[:, 0] = CLS_ID
    return ids, labels


__all__ = ["ByteClassifier", "ByteClassifierConfig", "CLS_ID", "PAD_ID", "VOCAB_SIZE", "encode_bytes",
           "marker_task", "train_step"]
