"""Two streams that attend to each other (LXMERT): per-stream layers, then cross-modal layers.

Stream a (LXMERT: language) runs ``config_a.n_layers`` self-attention blocks, stream b (vision)
``config_b.n_layers``; then ``n_cross`` cross-modal layers, each of which, per stream,

1. cross-attends to the *other* stream's states from before this layer (both directions read the
   previous states, so the order of the two streams does not matter),
2. self-attends, 3. applies its MLP,

each in a residual branch with the stream's norm position (LXMERT: post-norm, as BERT). With
``share_cross_attention`` (LXMERT) one cross-attention module and its norm serve both directions.

Parameter names are stable for key maps: ``layers_a.{i}.*`` / ``layers_b.{i}.*`` (a
:class:`~polyformer.transformer.Block` each), ``cross_layers.{i}.cross_attn`` and ``cross_norm``
when shared, else ``cross_attn_a`` / ``cross_norm_a`` (a attends to b) and ``cross_attn_b`` /
``cross_norm_b``, then ``cross_layers.{i}.block_a`` / ``block_b`` (self-attention and MLP), and
``final_norm_a`` / ``final_norm_b`` for pre-norm streams.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor, nn

from polyformer.errors import ConfigError, ShapeError
from polyformer.layers.attention import CrossAttention
from polyformer.layers.norms import build_norm
from polyformer.transformer import Block, TransformerConfig


def _layer_config(config: TransformerConfig, stream: str) -> TransformerConfig:
    """The stream's block settings for a cross-modal layer (one layer, no cross-attention of its own)."""
    if isinstance(config.attention_scale, list):
        raise ConfigError(
            f"two-stream config_{stream}: per-layer attention_scale is not supported in cross-modal "
            "layers; give one number or null"
        )
    return dataclasses.replace(
        config, n_layers=1, layer_attention={}, cross_attention=None, cross_attention_first=False,
        drop_path=0.0, layer_drop=0.0,
    )


class CrossModalLayer(nn.Module):
    """One LXMERT cross-modality layer: cross-attention both ways, then per-stream self-attention and MLP."""

    def __init__(self, config_a: TransformerConfig, config_b: TransformerConfig, share_cross_attention: bool) -> None:
        super().__init__()
        a, b = _layer_config(config_a, "a"), _layer_config(config_b, "b")
        self.shared = share_cross_attention
        self.pre_norm_a, self.pre_norm_b = a.norm_position == "pre", b.norm_position == "pre"

        def cross(query: TransformerConfig, context: TransformerConfig) -> CrossAttention:
            # Dense, as for every cross-attention: position patterns mean nothing across streams.
            return CrossAttention(
                query.d_model, query.n_heads, query.attention_head_dim, attention="dense",
                qkv_bias=query.qkv_bias, out_bias=query.out_bias, scale=query.attention_scale,
                kv_dim=context.d_model,
            )

        if share_cross_attention:
            self.cross_attn = cross(a, b)
            self.cross_norm = build_norm(a.norm, a.d_model, a.norm_eps)
        else:
            self.cross_attn_a, self.cross_attn_b = cross(a, b), cross(b, a)
            self.cross_norm_a = build_norm(a.norm, a.d_model, a.norm_eps)
            self.cross_norm_b = build_norm(b.norm, b.d_model, b.norm_eps)
        self.dropout_a, self.dropout_b = nn.Dropout(a.dropout), nn.Dropout(b.dropout)
        self.block_a, self.block_b = Block(a), Block(b)

    def _cross(self, stream: str) -> tuple[CrossAttention, nn.Module]:
        if self.shared:
            return self.cross_attn, self.cross_norm
        return getattr(self, f"cross_attn_{stream}"), getattr(self, f"cross_norm_{stream}")

    def _cross_step(
        self, stream: str, x: Tensor, context: Tensor, context_mask: Tensor | None, output_attentions: bool
    ) -> tuple[Tensor, Tensor | None]:
        attn, norm = self._cross(stream)
        pre = self.pre_norm_a if stream == "a" else self.pre_norm_b
        dropout = self.dropout_a if stream == "a" else self.dropout_b
        out = attn(norm(x) if pre else x, context, context_padding_mask=context_mask,
                   output_attentions=output_attentions)
        probs = None
        if output_attentions:
            out, probs = out
        x = x + dropout(out) if pre else norm(x + dropout(out))
        return x, probs

    def forward(
        self,
        a: Tensor,
        b: Tensor,
        mask_a: Tensor | None = None,
        mask_b: Tensor | None = None,
        *,
        output_attentions: bool = False,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """(B, Na, d_a), (B, Nb, d_b) -> the same shapes; masks are (B, N) with True = real token.

        With ``output_attentions`` also returns the cross-attention probabilities (a -> b, b -> a).
        """
        new_a, probs_a = self._cross_step("a", a, b, mask_b, output_attentions)
        new_b, probs_b = self._cross_step("b", b, a, mask_a, output_attentions)  # the previous a
        new_a = self.block_a(new_a, key_padding_mask=mask_a)
        new_b = self.block_b(new_b, key_padding_mask=mask_b)
        if output_attentions:
            return new_a, new_b, (probs_a, probs_b)  # type: ignore[return-value]
        return new_a, new_b


@dataclass
class TwoStreamOutput:
    """Final states of both streams; per-layer states and probabilities when asked.

    ``hidden_states_a`` / ``_b`` follow LXMERT: each layer's output (the stream's own layers,
    then the cross-modal layers), without the input. ``attentions_a`` / ``_b``: the stream's own
    self-attention layers; ``cross_attentions_a`` (a attends to b) / ``_b``: per cross-modal layer.
    """

    a: Tensor
    b: Tensor
    hidden_states_a: tuple[Tensor, ...] | None = None
    hidden_states_b: tuple[Tensor, ...] | None = None
    attentions_a: tuple[Tensor, ...] | None = None
    attentions_b: tuple[Tensor, ...] | None = None
    cross_attentions_a: tuple[Tensor, ...] | None = None
    cross_attentions_b: tuple[Tensor, ...] | None = None


class TwoStreamEncoder(nn.Module):
    """Per-stream self-attention layers, then cross-modal layers (see the module docstring).

    ``config_a`` / ``config_b`` give each stream's block settings and its number of own layers
    (``n_layers``; LXMERT's ``l_layers`` and ``r_layers``); ``n_cross`` is the number of
    cross-modal layers (``x_layers``). ``share_cross_attention`` needs both streams of one width.
    """

    def __init__(
        self,
        config_a: TransformerConfig,
        config_b: TransformerConfig,
        n_cross: int,
        *,
        share_cross_attention: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(n_cross, int) or isinstance(n_cross, bool) or n_cross < 0:
            raise ConfigError(f"TwoStreamEncoder: n_cross must be an integer >= 0, got {n_cross!r}")
        for stream, config in (("a", config_a), ("b", config_b)):
            if config.cross_attention is not None:
                raise ConfigError(
                    f"TwoStreamEncoder: config_{stream} must not set cross_attention; the cross-modal "
                    "layers add it (share_cross_attention chooses one module or two)"
                )
        if share_cross_attention and (config_a.d_model, config_a.n_heads) != (config_b.d_model, config_b.n_heads):
            raise ConfigError(
                "TwoStreamEncoder: share_cross_attention needs both streams of one width and head count, "
                f"got d_model {config_a.d_model}/{config_b.d_model}, n_heads {config_a.n_heads}/"
                f"{config_b.n_heads}; pass share_cross_attention=False"
            )
        self.config_a, self.config_b = config_a, config_b
        self.layers_a = nn.ModuleList(Block(config_a, i) for i in range(config_a.n_layers))
        self.layers_b = nn.ModuleList(Block(config_b, i) for i in range(config_b.n_layers))
        self.cross_layers = nn.ModuleList(
            CrossModalLayer(config_a, config_b, share_cross_attention) for _ in range(n_cross)
        )
        self.final_norm_a: nn.Module = nn.Identity()
        self.final_norm_b: nn.Module = nn.Identity()
        if config_a.uses_final_norm:
            self.final_norm_a = build_norm(config_a.norm, config_a.d_model, config_a.norm_eps)
        if config_b.uses_final_norm:
            self.final_norm_b = build_norm(config_b.norm, config_b.d_model, config_b.norm_eps)

    def forward(
        self,
        a: Tensor,
        b: Tensor,
        padding_mask_a: Tensor | None = None,
        padding_mask_b: Tensor | None = None,
        *,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> TwoStreamOutput:
        """(B, Na, d_a), (B, Nb, d_b) -> both streams' states; masks (B, N), True = real token."""
        self._check(a, b, padding_mask_a, padding_mask_b)
        hidden_a: list[Tensor] = []
        hidden_b: list[Tensor] = []
        attn_a: list[Tensor] = []
        attn_b: list[Tensor] = []
        for layers, x, mask, hidden, attn in (
            (self.layers_a, a, padding_mask_a, hidden_a, attn_a),
            (self.layers_b, b, padding_mask_b, hidden_b, attn_b),
        ):
            for layer in layers:
                out = layer(x, key_padding_mask=mask, output_attentions=output_attentions)
                if output_attentions:
                    out, probs, _ = out
                    attn.append(probs)
                x = out
                hidden.append(x)
        a = hidden_a[-1] if hidden_a else a
        b = hidden_b[-1] if hidden_b else b
        cross_a: list[Tensor] = []
        cross_b: list[Tensor] = []
        for layer in self.cross_layers:
            out = layer(a, b, padding_mask_a, padding_mask_b, output_attentions=output_attentions)
            if output_attentions:
                a, b, (probs_a, probs_b) = out
                cross_a.append(probs_a)
                cross_b.append(probs_b)
            else:
                a, b = out
            hidden_a.append(a)
            hidden_b.append(b)
        return TwoStreamOutput(
            a=self.final_norm_a(a),
            b=self.final_norm_b(b),
            hidden_states_a=tuple(hidden_a) if output_hidden_states else None,
            hidden_states_b=tuple(hidden_b) if output_hidden_states else None,
            attentions_a=tuple(attn_a) if output_attentions else None,
            attentions_b=tuple(attn_b) if output_attentions else None,
            cross_attentions_a=tuple(cross_a) if output_attentions else None,
            cross_attentions_b=tuple(cross_b) if output_attentions else None,
        )

    def _check(self, a: Tensor, b: Tensor, mask_a: Tensor | None, mask_b: Tensor | None) -> None:
        for stream, x, config, mask in (("a", a, self.config_a, mask_a), ("b", b, self.config_b, mask_b)):
            if x.dim() != 3 or x.shape[-1] != config.d_model:
                raise ShapeError(
                    f"TwoStreamEncoder: stream {stream} must be (batch, length, {config.d_model}), got "
                    f"{tuple(x.shape)}"
                )
            if mask is not None and tuple(mask.shape) != tuple(x.shape[:2]):
                raise ShapeError(
                    f"TwoStreamEncoder: padding_mask_{stream} must be (batch, length) = "
                    f"{tuple(x.shape[:2])}, got {tuple(mask.shape)}; True/1 marks real tokens"
                )
        if a.shape[0] != b.shape[0]:
            raise ShapeError(f"TwoStreamEncoder: the streams' batch sizes differ ({a.shape[0]} vs {b.shape[0]})")
