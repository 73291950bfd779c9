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

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyformer.attention import AttentionSpec
from polyformer.convert.keymap import KeyMap
from polyformer.errors import ConfigError, ShapeError
from polyformer.generation import generate
from polyformer.layers import LearnedPositions, TokenEmbedding
from polyformer.models import register_model
from polyformer.models.base import FamilyConfig, PretrainedModel, final_normed_states, init_weights
from polyformer.models.heads import classification_loss
from polyformer.models.igpt_convert import imagegpt_key_map
from polyformer.models.outputs import CausalLMOutput, ImageClassifierOutput
from polyformer.options import require
from polyformer.transformer import Decoder, LayerCache, StackOutput, TransformerConfig, cache_length

__all__ = ["ImageGPTConfig", "ImageGPTForCausalImageModeling", "ImageGPTForImageClassification"]


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------
@dataclass
class ImageGPTConfig(FamilyConfig):
    """Sizes of an iGPT; a plain dataclass.

    ``vocab_size`` = palette colours + 1 (the last id is the start-of-image token);
    ``n_positions`` = pixels per image (e.g. 32·32); ``d_model`` (HF ``n_embd``), ``n_layers``,
    ``n_heads``, ``d_ff`` (None = 4·d_model); ``activation``; ``norm_eps``; ``dropout``;
    ``attention`` (the mechanism of every layer); ``scale_attn_weights`` /
    ``scale_attn_by_inverse_layer_idx`` (GPT-2's score scaling). The classifier variant also uses
    ``num_labels`` / ``id2label``.
    """

    model_types: ClassVar[tuple[str, ...]] = ("imagegpt",)
    hf_names: ClassVar[dict[str, str]] = {
        "vocab_size": "vocab_size", "n_positions": "n_positions", "d_model": "n_embd", "n_layers": "n_layer",
        "n_heads": "n_head", "d_ff": "n_inner", "activation": "activation_function",
        "norm_eps": "layer_norm_epsilon", "dropout": "resid_pdrop", "scale_attn_weights": "scale_attn_weights",
        "scale_attn_by_inverse_layer_idx": "scale_attn_by_inverse_layer_idx",
        "initializer_range": "initializer_range",
    }
    hf_constants: ClassVar[dict[str, Any]] = {"attn_pdrop": 0.0, "tie_word_embeddings": False}
    has_labels: ClassVar[bool] = True

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
        self.resolve_label_fields()
        self.check_positive("vocab_size", "n_positions", "d_model", "n_layers", "n_heads")
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
            attention_scale=self.layer_scales(), dropout=self.dropout,
        )

    # -- Hugging Face config.json -------------------------------------------------------------------
    @classmethod
    def extra_from_hf(cls, raw: dict[str, Any], where: str) -> dict[str, Any]:
        if raw.get("add_cross_attention"):
            raise ConfigError("add_cross_attention=true (ImageGPT with cross-attention) is not supported")
        return {}

    def extra_to_hf(self) -> dict[str, Any]:
        return {"embd_pdrop": self.dropout}


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

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
        caches: list[LayerCache] | None = None, output_hidden_states: bool = False, output_attentions: bool = False,
    ) -> StackOutput:
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
        return self.decoder.run(h, key_padding_mask=attention_mask, position_ids=position_ids, caches=caches,
                                output_hidden_states=output_hidden_states, output_attentions=output_attentions)


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
        init_weights(self, config.initializer_range, residual_layers=config.n_layers)

    @classmethod
    def key_map(cls, config: ImageGPTConfig) -> KeyMap:
        return imagegpt_key_map("lm_head")

    def new_caches(self) -> list[LayerCache]:
        """Fresh decoding state, one per layer (each mechanism picks its own cache type)."""
        return self.transformer.decoder.new_caches()

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
        labels: Tensor | None = None, caches: list[LayerCache] | None = None, logits_to_keep: int = 0,
        output_hidden_states: bool = False, output_attentions: bool = False,
    ) -> CausalLMOutput:
        """Next-pixel scores for ``input_ids`` (B, T) (the start token, then pixels).

        ``labels`` (B, T) give Hugging Face's loss (position t predicts label t+1).
        ``caches`` make the call incremental; ``logits_to_keep`` > 0 scores only the last positions.
        """
        out = self.transformer(input_ids, attention_mask, position_ids, caches, output_hidden_states, output_attentions)
        h = out.last_hidden_state  # (B, T, d)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)  # (B, T, n_clusters)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1))
        return CausalLMOutput(loss=loss, logits=logits, hidden_states=final_normed_states(out),
                              attentions=out.attentions, caches=caches)

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

        ``total_length`` defaults to ``n_positions``; ``temperature`` 0 is greedy. The shared
        generation loop keeps earlier pixels in the decoder's caches (each mechanism's own), so each
        new pixel costs one position.
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
        sampling = dict(do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p) if temperature else {}
        out = generate(self, ids, max_new_tokens=total - prompt.shape[1], generator=generator, **sampling)
        return out.sequences[:, 1:]  # without the start token

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
    head_weight: ClassVar[str] = "score.weight"

    def __init__(self, config: ImageGPTConfig) -> None:
        super().__init__(config)
        self.transformer = _ImageGPTBackbone(config)
        self.score = nn.Linear(config.d_model, config.num_labels, bias=False)
        init_weights(self, config.initializer_range, residual_layers=config.n_layers)

    @classmethod
    def key_map(cls, config: ImageGPTConfig) -> KeyMap:
        return imagegpt_key_map("score")

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
        output_hidden_states: bool = False, output_attentions: bool = False,
    ) -> ImageClassifierOutput:
        """Class scores for pixel tokens ``input_ids`` (B, N) (as the processor gives them)."""
        out = self.transformer(input_ids, attention_mask, output_hidden_states=output_hidden_states,
                               output_attentions=output_attentions)
        logits = self.score(out.last_hidden_state.mean(dim=1))  # (B, num_labels); every position, as HF pools
        loss = None if labels is None else classification_loss(logits, labels, self.config.problem_type)
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=final_normed_states(out),
                                     attentions=out.attentions)


register_model(ImageGPTForCausalImageModeling)
register_model(ImageGPTForImageClassification)
