"""iGPT (Chen et al. 2020): a GPT that reads an image as a sequence of palette-coloured pixels.

Each pixel is replaced by the index of its nearest colour in a small k-means palette (the
``clusters`` of :class:`~polyformer.processors.ImageGPTProcessor`), the indices are read in raster
order after a start-of-image token (``vocab_size - 1``), and a causal decoder predicts every next
pixel. The decoder is GPT-2's with iGPT's two changes: norms without centring or bias (RMS style)
and ``quick_gelu``. Sampling pixel by pixel after the top half of an image *completes* it.

>>> config = ImageGPTConfig(vocab_size=9, n_positions=16, d_model=32, n_layers=2, n_heads=4)
>>> model = ImageGPTForCausalImageModeling(config).eval()
>>> pixels = torch.randint(0, 8, (2, 16))                       # two 4x4 images, 8 colours
>>> model.image_nll(pixels).shape                                # mean negative log-likelihood
torch.Size([])
>>> model.complete(pixels[:, :8], total_length=16).shape         # top half given, bottom sampled
torch.Size([2, 16])

Loads and saves Hugging Face ``ImageGPTForCausalImageModeling`` and ``ImageGPTForImageClassification``
folders; any registered attention mechanism can replace the dense one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyformer.attention import AttentionSpec
from polyformer.convert.keymap import KeyMap, Rule, split_rows, transpose
from polyformer.errors import CheckpointError, ConfigError, ShapeError
from polyformer.layers import LearnedPositions, TokenEmbedding
from polyformer.models import register_model
from polyformer.models._folders import write_hf_folder
from polyformer.models._labels import check_head_rows, labels_to_hf, parse_id2label, resolve_labels
from polyformer.models.base import POLYFORMER_KEY, PretrainedModel
from polyformer.models.heads import classification_loss
from polyformer.models.vit import ImageClassifierOutput
from polyformer.options import require
from polyformer.transformer import Decoder, LayerCache, TransformerConfig, cache_length

__all__ = [
    "CausalImageOutput",
    "ImageGPTConfig",
    "ImageGPTForCausalImageModeling",
    "ImageGPTForImageClassification",
    "imagegpt_key_map",
    "sample_next",
]


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
@dataclass
class ImageGPTConfig:
    """Sizes of an iGPT; a plain dataclass.

    ``vocab_size`` = palette colours + 1 (the last id is the start-of-image token);
    ``n_positions`` = pixels per image (e.g. 32·32); ``d_model`` (HF ``n_embd``), ``n_layers``,
    ``n_heads``, ``d_ff`` (None = 4·d_model); ``activation``; ``norm_eps``; ``dropout``;
    ``attention`` (the mechanism of every layer); ``scale_attn_weights`` /
    ``scale_attn_by_inverse_layer_idx`` (GPT-2's score scaling). The classifier variant also uses
    ``num_labels`` / ``id2label``.
    """

    vocab_size: int = 513
    n_positions: int = 1024
    d_model: int = 512
    n_layers: int = 24
    n_heads: int = 8
    d_ff: int | None = None
    activation: str = "quick_gelu"
    norm_eps: float = 1e-5
    dropout: float = 0.0
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    num_labels: int | None = None
    id2label: dict[int, str] | None = None
    problem_type: str | None = None
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        self.attention = AttentionSpec.coerce(self.attention)
        self.id2label = resolve_labels(self.num_labels, self.id2label, "ImageGPTConfig")
        self.num_labels = len(self.id2label)
        for name in ("vocab_size", "n_positions", "d_model", "n_layers", "n_heads"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                    f"ImageGPTConfig.{name} must be a positive integer, got {value!r}")
        require(self.vocab_size >= 3, f"ImageGPTConfig.vocab_size must be palette colours + 1 (>= 3), got {self.vocab_size}")
        require(self.d_model % self.n_heads == 0,
                f"ImageGPTConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        self.transformer_config()  # checks activation, mechanism name and options now

    @property
    def n_clusters(self) -> int:
        """Palette colours (pixel tokens)."""
        return self.vocab_size - 1

    @property
    def sos_token_id(self) -> int:
        """The start-of-image token (Hugging Face: ``vocab_size - 1``)."""
        return self.vocab_size - 1

    def layer_scales(self) -> list[float]:
        """The factor multiplying ``q·k`` in each layer."""
        base = 1 / math.sqrt(self.d_model // self.n_heads) if self.scale_attn_weights else 1.0
        return [base / (i + 1) if self.scale_attn_by_inverse_layer_idx else base for i in range(self.n_layers)]

    def transformer_config(self) -> TransformerConfig:
        """The core's decoder: GPT-2 blocks with RMS-style norms and quick_gelu."""
        return TransformerConfig(
            d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, d_ff=self.d_ff, norm="rmsnorm",
            norm_eps=self.norm_eps, activation=self.activation, attention=self.attention,
            attention_scale=self.layer_scales()[0], dropout=self.dropout,
        )

    def with_attention(self, attention: AttentionSpec | str | dict) -> "ImageGPTConfig":
        """A copy whose every layer uses ``attention``."""
        return dataclasses.replace(self, attention=AttentionSpec.coerce(attention))

    # -- Hugging Face config.json -------------------------------------------------------------------
    @classmethod
    def from_hf(cls, raw: dict[str, Any], where: str = "config.json") -> "ImageGPTConfig":
        """The config of a Hugging Face ImageGPT ``config.json``."""
        if raw.get("model_type") != "imagegpt":
            raise CheckpointError(f"{where}: model_type {raw.get('model_type')!r} is not 'imagegpt'")
        if raw.get("add_cross_attention"):
            raise CheckpointError(f"{where}: add_cross_attention=true (ImageGPT with cross-attention) is not supported")
        own = raw.get(POLYFORMER_KEY) or {}
        try:
            return cls(
                vocab_size=raw.get("vocab_size", 513), n_positions=raw.get("n_positions", 1024),
                d_model=raw.get("n_embd", 512), n_layers=raw.get("n_layer", 24), n_heads=raw.get("n_head", 8),
                d_ff=raw.get("n_inner"), activation=raw.get("activation_function", "quick_gelu"),
                norm_eps=raw.get("layer_norm_epsilon", 1e-5), dropout=raw.get("resid_pdrop", 0.0),
                attention=own.get("attention") or AttentionSpec(),
                scale_attn_weights=raw.get("scale_attn_weights", True),
                scale_attn_by_inverse_layer_idx=raw.get("scale_attn_by_inverse_layer_idx", False),
                num_labels=None if raw.get("id2label") else raw.get("num_labels"),
                id2label=parse_id2label(raw, where), problem_type=raw.get("problem_type"),
                initializer_range=raw.get("initializer_range", 0.02),
            )
        except ConfigError as error:
            raise CheckpointError(f"{where}: {error}") from None

    def to_hf(self, architecture: str = "ImageGPTForCausalImageModeling") -> dict[str, Any]:
        """A Hugging Face ``config.json``."""
        out: dict[str, Any] = {
            "model_type": "imagegpt",
            "architectures": [architecture],
            "vocab_size": self.vocab_size,
            "n_positions": self.n_positions,
            "n_embd": self.d_model,
            "n_layer": self.n_layers,
            "n_head": self.n_heads,
            "n_inner": self.d_ff,
            "activation_function": self.activation,
            "layer_norm_epsilon": self.norm_eps,
            "resid_pdrop": self.dropout,
            "embd_pdrop": self.dropout,
            "attn_pdrop": 0.0,
            "scale_attn_weights": self.scale_attn_weights,
            "scale_attn_by_inverse_layer_idx": self.scale_attn_by_inverse_layer_idx,
            "initializer_range": self.initializer_range,
            "tie_word_embeddings": False,
            **labels_to_hf(self.id2label or {}),
        }
        if self.problem_type is not None:
            out["problem_type"] = self.problem_type
        if self.attention != AttentionSpec():
            out[POLYFORMER_KEY] = {"attention": {"name": self.attention.name, "options": dict(self.attention.options)}}
        return out


# ------------------------------------------------------------------------------------------------
# Checkpoint key map
# ------------------------------------------------------------------------------------------------
def imagegpt_key_map(head: str) -> KeyMap:
    """Hugging Face ImageGPT names <-> ours; ``head`` is ``"lm_head"`` or ``"score"`` (both bias-free).

    GPT-2's fused, transposed ``c_attn`` Conv1D becomes three ``nn.Linear`` projections.
    """
    h, ours = "transformer.h.{}.", "transformer.decoder.layers.{}."
    rules = [
        Rule("transformer.wte.weight", "transformer.wte.weight"),
        Rule("transformer.wpe.weight", "transformer.wpe.weight"),
        Rule(f"{h}ln_1.weight", f"{ours}attn_norm.weight"),
        Rule(f"{h}attn.c_attn.weight", tuple(f"{ours}attn.{p}_proj.weight" for p in "qkv"), *split_rows(3, transposed=True)),
        Rule(f"{h}attn.c_attn.bias", tuple(f"{ours}attn.{p}_proj.bias" for p in "qkv"), *split_rows(3)),
        Rule(f"{h}attn.c_proj.weight", f"{ours}attn.out_proj.weight", *transpose()),
        Rule(f"{h}attn.c_proj.bias", f"{ours}attn.out_proj.bias"),
        Rule(f"{h}ln_2.weight", f"{ours}mlp_norm.weight"),
        Rule(f"{h}mlp.c_fc.weight", f"{ours}mlp.fc_in.weight", *transpose()),
        Rule(f"{h}mlp.c_fc.bias", f"{ours}mlp.fc_in.bias"),
        Rule(f"{h}mlp.c_proj.weight", f"{ours}mlp.fc_out.weight", *transpose()),
        Rule(f"{h}mlp.c_proj.bias", f"{ours}mlp.fc_out.bias"),
        Rule("transformer.ln_f.weight", "transformer.decoder.final_norm.weight"),
        Rule(f"{head}.weight", f"{head}.weight"),
    ]
    # Older transformers versions stored the causal mask as buffers; they carry no weights.
    return KeyMap(rules, ignore=("transformer.h.{}.attn.bias", "transformer.h.{}.attn.masked_bias"))


# ------------------------------------------------------------------------------------------------
# Modules
# ------------------------------------------------------------------------------------------------
class _ImageGPTBackbone(nn.Module):
    """Token and position embeddings and the causal decoder (whose final norm is ``ln_f``)."""

    def __init__(self, config: ImageGPTConfig) -> None:
        super().__init__()
        self.n_positions = config.n_positions
        self.wte = TokenEmbedding(config.vocab_size, config.d_model)
        self.wpe = LearnedPositions(config.n_positions, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.decoder = Decoder(config.transformer_config())
        for layer, scale in zip(self.decoder.layers, config.layer_scales()):
            layer.attn.scale = scale  # scale_attn_by_inverse_layer_idx differs per layer

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
        caches: list[LayerCache] | None = None,
    ) -> Tensor:
        if input_ids.dim() != 2:
            raise ShapeError(f"ImageGPT: input_ids must be (batch, length), got {tuple(input_ids.shape)}")
        past, t = cache_length(caches), input_ids.shape[1]
        if past + t > self.n_positions:
            raise ShapeError(
                f"ImageGPT: {past + t} positions ({past} cached + {t} new) exceed n_positions={self.n_positions} "
                "(the start token plus all but the last pixel fit)"
            )
        if position_ids is None:
            position_ids = torch.arange(past, past + t, device=input_ids.device)[None]  # (1, T)
        h = self.drop(self.wte(input_ids) + self.wpe(position_ids))  # (B, T, d)
        return self.decoder(h, key_padding_mask=attention_mask, position_ids=position_ids, caches=caches)


def _init_gpt_weights(model: nn.Module, std: float, n_layers: int) -> None:
    """GPT-2's initialisation: N(0, std); residual output projections scaled by 1/sqrt(2·layers)."""
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            residual_out = name.endswith(("attn.out_proj", "mlp.fc_out"))
            nn.init.normal_(module.weight, 0.0, std / math.sqrt(2 * n_layers) if residual_out else std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, LearnedPositions):
            nn.init.normal_(module.weight, 0.0, std)


@dataclass
class CausalImageOutput:
    """``logits`` (B, T, vocab_size - 1) over palette colours; ``loss`` (HF's shifted mean CE) with labels."""

    logits: Tensor
    loss: Tensor | None = None


def sample_next(
    logits: Tensor, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, V) scores -> (B,) sampled ids; ``temperature`` 0 is greedy.

    A minimal sampler private to iGPT until the shared generation utilities land.
    """
    if temperature < 0:
        raise ConfigError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        if top_k < 1:
            raise ConfigError(f"top_k must be a positive integer, got {top_k}")
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0 < top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {top_p}")
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


class ImageGPTForCausalImageModeling(PretrainedModel):
    """iGPT with its next-pixel head (Hugging Face ``ImageGPTForCausalImageModeling``).

    Parameter names: ``transformer.wte``, ``transformer.wpe``, ``transformer.decoder.layers.{i}.*``,
    ``transformer.decoder.final_norm`` (HF ``ln_f``), ``lm_head`` (no bias; it never predicts the
    start token).
    """

    model_type: ClassVar[str] = "imagegpt"
    architectures: ClassVar[tuple[str, ...]] = ("ImageGPTForCausalImageModeling",)
    config_class: ClassVar[type] = ImageGPTConfig

    def __init__(self, config: ImageGPTConfig) -> None:
        super().__init__(config)
        self.transformer = _ImageGPTBackbone(config)
        self.lm_head = nn.Linear(config.d_model, config.n_clusters, bias=False)
        _init_gpt_weights(self, config.initializer_range, config.n_layers)

    @classmethod
    def key_map(cls, config: ImageGPTConfig) -> KeyMap:
        return imagegpt_key_map("lm_head")

    def new_caches(self) -> list[LayerCache]:
        """Fresh decoding state, one per layer (each mechanism picks its own cache type)."""
        return self.transformer.decoder.new_caches()

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
        labels: Tensor | None = None, caches: list[LayerCache] | None = None, logits_to_keep: int = 0,
    ) -> CausalImageOutput:
        """Next-pixel scores for ``input_ids`` (B, T) (the start token, then pixels).

        ``labels`` (B, T) give Hugging Face's loss (position t predicts label t+1).
        ``caches`` make the call incremental; ``logits_to_keep`` > 0 scores only the last positions.
        """
        h = self.transformer(input_ids, attention_mask, position_ids, caches)  # (B, T, d)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)  # (B, T, n_clusters)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1))
        return CausalImageOutput(logits=logits, loss=loss)

    # -- images as token sequences -----------------------------------------------------------------
    def with_start_token(self, pixels: Tensor) -> Tensor:
        """(B, N) pixel tokens -> (B, 1 + N) with the start-of-image token in front."""
        sos = torch.full((pixels.shape[0], 1), self.config.sos_token_id, dtype=torch.long, device=pixels.device)
        return torch.cat((sos, pixels.long()), dim=1)

    def image_nll(self, pixels: Tensor) -> Tensor:
        """Mean negative log-likelihood (nats per pixel) of whole images (B, N) of palette tokens.

        The model reads the start token and pixels 0..N-2 and predicts pixels 0..N-1; divide by
        ln 2 for bits per dimension.
        """
        self._check_pixels(pixels)
        logits = self(self.with_start_token(pixels[:, :-1])).logits  # (B, N, n_clusters)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), pixels.reshape(-1).long())

    @torch.no_grad()
    def complete(
        self, prompt: Tensor, total_length: int | None = None, *, num_samples: int = 1, temperature: float = 1.0,
        top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample the rest of images whose first pixels are ``prompt`` (B, P) -> (B·num_samples, total).

        ``total_length`` defaults to ``n_positions``. Keys and values of earlier pixels are kept in
        the decoder's caches (each mechanism's own), so each new pixel costs one position.
        """
        total = total_length or self.config.n_positions
        if prompt.dim() != 2:
            raise ShapeError(f"complete: prompt must be (batch, pixels), got {tuple(prompt.shape)}")
        if not 0 <= prompt.shape[1] < total <= self.config.n_positions:
            raise ShapeError(
                f"complete: need 0 <= prompt pixels ({prompt.shape[1]}) < total_length ({total}) <= "
                f"n_positions ({self.config.n_positions})"
            )
        if num_samples < 1:
            raise ConfigError(f"num_samples must be a positive integer, got {num_samples}")
        if prompt.numel():
            self._check_pixels(prompt)
        ids = self.with_start_token(prompt.repeat_interleave(num_samples, dim=0))  # (B·S, 1 + P)
        caches = self.new_caches()
        logits = self(ids, caches=caches, logits_to_keep=1).logits[:, -1]  # (B·S, n_clusters)
        out = [ids[:, 1:]]
        for step in range(prompt.shape[1], total):
            token = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            out.append(token[:, None])
            if step + 1 < total:
                logits = self(token[:, None], caches=caches).logits[:, -1]
        return torch.cat(out, dim=1)

    def _check_pixels(self, pixels: Tensor) -> None:
        if pixels.dim() != 2 or pixels.is_floating_point():
            raise ShapeError(f"pixels must be (batch, pixels) integer palette ids, got {tuple(pixels.shape)} {pixels.dtype}")
        if pixels.shape[1] > self.config.n_positions:
            raise ShapeError(f"{pixels.shape[1]} pixels exceed n_positions={self.config.n_positions}")
        if int(pixels.min()) < 0 or int(pixels.max()) >= self.config.n_clusters:
            raise ShapeError(
                f"pixel ids must lie in [0, {self.config.n_clusters}) (palette colours), got "
                f"[{int(pixels.min())}, {int(pixels.max())}]; use the model's ImageGPTProcessor"
            )


class ImageGPTForImageClassification(PretrainedModel):
    """iGPT features averaged over the pixels and a linear head (``ImageGPTForImageClassification``)."""

    model_type: ClassVar[str] = "imagegpt"
    architectures: ClassVar[tuple[str, ...]] = ("ImageGPTForImageClassification",)
    config_class: ClassVar[type] = ImageGPTConfig

    def __init__(self, config: ImageGPTConfig) -> None:
        super().__init__(config)
        self.transformer = _ImageGPTBackbone(config)
        self.score = nn.Linear(config.d_model, config.num_labels, bias=False)
        _init_gpt_weights(self, config.initializer_range, config.n_layers)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(self.config.id2label)

    @classmethod
    def key_map(cls, config: ImageGPTConfig) -> KeyMap:
        return imagegpt_key_map("score")

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None
    ) -> ImageClassifierOutput:
        """Class scores for pixel tokens ``input_ids`` (B, N) (as the processor gives them)."""
        h = self.transformer(input_ids, attention_mask)  # (B, N, d)
        logits = self.score(h.mean(dim=1))  # (B, num_labels); every position, as Hugging Face pools
        loss = None if labels is None else classification_loss(logits, labels, self.config.problem_type)
        return ImageClassifierOutput(logits=logits, loss=loss)

    def complete_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        head = state.get("score.weight")
        if head is not None:
            check_head_rows(head.shape[0], self.config.id2label, "score.weight", "checkpoint")
        return state

    def save_pretrained(self, path: str | Path) -> Path:
        """Write a Hugging Face ``ImageGPTForImageClassification`` folder."""
        hf_state = self.key_map(self.config).to_hf(self.state_dict())
        return write_hf_folder(path, self.config.to_hf("ImageGPTForImageClassification"), hf_state)


register_model(ImageGPTForCausalImageModeling)
register_model(ImageGPTForImageClassification)
