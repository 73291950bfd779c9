"""CLIP's two encoders on the core: a causal text tower pooled at end-of-text, a ViT-style image tower.

* Text: token + learned position vectors -> the core's causal :class:`~polyformer.transformer.Decoder`
  (pre-norm blocks, final norm) -> the state at each text's end-of-text token.
* Vision: patches (a convolution without bias) + a class token + learned positions -> a norm
  (CLIP's "pre_layrnorm") -> the core's :class:`~polyformer.transformer.Encoder` without a final
  norm -> a norm on the class token (the pooled output).

Both return :class:`~polyformer.models.outputs.BaseModelOutputWithPooling`, so
:class:`~polyformer.compose.two_tower.TwoTower` joins them as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from polyformer.errors import DataError, ShapeError
from polyformer.layers import LearnedPositions, TokenEmbedding, resize_positions_1d, resize_positions_2d
from polyformer.layers.norms import build_norm
from polyformer.models.base import init_weights
from polyformer.models.outputs import BaseModelOutputWithPooling
from polyformer.transformer import Block, Decoder, Encoder

if TYPE_CHECKING:
    from polyformer.models.clip import CLIPTextConfig, CLIPVisionConfig

__all__ = ["CLIPTextEmbeddings", "CLIPTextTower", "CLIPVisionEmbeddings", "CLIPVisionTower", "init_clip_weights"]

#: Old CLIP configs carry eos_token_id 2, which is not the end-of-text id of the CLIP vocabulary;
#: for them the end of text is where the largest id sits (<|endoftext|> is the last id), as transformers does.
LEGACY_EOS_TOKEN_ID = 2


class CLIPTextEmbeddings(nn.Module):
    """Token vectors plus learned position vectors (``token_embedding``, ``position_embedding``)."""

    def __init__(self, config: "CLIPTextConfig") -> None:
        super().__init__()
        self.token_embedding = TokenEmbedding(config.vocab_size, config.d_model)
        self.position_embedding = LearnedPositions(config.max_position_embeddings, config.d_model)

    def forward(self, input_ids: Tensor, position_ids: Tensor | None = None) -> Tensor:
        """(B, N) ids -> (B, N, d); positions default to 0..N-1."""
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device)[None]
        return self.token_embedding(input_ids) + self.position_embedding(position_ids)


class CLIPTextTower(nn.Module):
    """CLIP's text encoder (Hugging Face ``CLIPTextTransformer``): causal, pooled at end-of-text."""

    def __init__(self, config: "CLIPTextConfig") -> None:
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.decoder = Decoder(config.transformer_config())  # its final_norm is CLIP's final_layer_norm

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, position_ids: Tensor | None = None,
                output_attentions: bool = False, output_hidden_states: bool = False) -> BaseModelOutputWithPooling:
        """``input_ids`` (B, N) -> every token's state and, as ``pooler_output``, the end-of-text state."""
        if input_ids.dim() != 2:
            raise ShapeError(f"CLIP text: input_ids must be (batch, length), got {tuple(input_ids.shape)}")
        limit = self.config.max_position_embeddings
        if input_ids.shape[1] > limit and position_ids is None:
            raise ShapeError(
                f"CLIP text: {input_ids.shape[1]} tokens exceed the text tower's {limit} positions "
                f"(max_position_embeddings); tokenize with truncation=True (processor(text=..., truncation=True)), "
                f"or stretch the position table with model.stretch_text_context({input_ids.shape[1]}) "
                "(interpolated positions; accuracy may drop)"
            )
        mask = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(input_ids.shape):
                raise ShapeError(f"CLIP text: attention_mask must be (batch, length) = {tuple(input_ids.shape)}, "
                                 f"got {tuple(attention_mask.shape)}; 1 marks real tokens, 0 padding")
            mask = attention_mask.bool()
        h = self.embeddings(input_ids, position_ids)  # (B, N, d)
        out = self.decoder.run(h, key_padding_mask=mask, output_hidden_states=output_hidden_states,
                               output_attentions=output_attentions)
        last = out.last_hidden_state  # final norm applied
        pooled = last[torch.arange(last.shape[0], device=last.device), self.end_of_text(input_ids)]  # (B, d)
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=pooled,
                                          hidden_states=out.hidden_states, attentions=out.attentions)

    def end_of_text(self, input_ids: Tensor) -> Tensor:
        """(B,) the position each text is pooled at: its first ``eos_token_id`` (legacy: its largest id)."""
        eos = self.config.eos_token_id
        if eos == LEGACY_EOS_TOKEN_ID:
            return input_ids.argmax(dim=-1)
        ids = torch.tensor(eos if isinstance(eos, (list, tuple)) else [eos], device=input_ids.device)
        is_eos = torch.isin(input_ids, ids)
        if not torch.compiler.is_compiling():
            missing = (~is_eos.any(dim=-1)).nonzero().flatten().tolist()
            if missing:
                raise DataError(
                    f"CLIP text: row(s) {missing[:8]} have no end-of-text token (id {eos}), where the text "
                    "is pooled; tokenize with the model's CLIP tokenizer, which appends it (also when truncating)"
                )
        return is_eos.int().argmax(dim=-1)  # the first end-of-text of each row

    @torch.no_grad()
    def stretch_context(self, new_length: int) -> None:
        """Resize the position table to ``new_length`` rows by linear interpolation, and the config."""
        table = self.embeddings.position_embedding.weight
        resized = resize_positions_1d(table, new_length)
        self.embeddings.position_embedding.weight = nn.Parameter(resized, requires_grad=table.requires_grad)
        self.config.max_position_embeddings = new_length


class CLIPVisionEmbeddings(nn.Module):
    """Patches (convolution, no bias) after a class token, plus learned positions (interpolated on request)."""

    def __init__(self, config: "CLIPVisionConfig") -> None:
        super().__init__()
        self.image_size, self.patch_size, self.num_channels = config.image_size, config.patch_size, config.num_channels
        self.grid = config.image_size // config.patch_size
        self.patch_embedding = nn.Conv2d(config.num_channels, config.d_model, config.patch_size,
                                         stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(config.d_model))
        self.position_embedding = LearnedPositions(self.grid * self.grid + 1, config.d_model)

    def forward(self, pixel_values: Tensor, interpolate_pos_encoding: bool = False) -> Tensor:
        """(B, C, H, W) -> (B, 1 + (H/p)·(W/p), d)."""
        size = self.image_size
        if pixel_values.dim() != 4 or pixel_values.shape[1] != self.num_channels:
            raise ShapeError(
                f"CLIP vision: pixel_values must be (batch, channels={self.num_channels}, height, width), got "
                f"{tuple(pixel_values.shape)}; prepare images with CLIPImageProcessor (it converts grayscale "
                "and RGBA to RGB)"
            )
        if not pixel_values.is_floating_point():
            raise ShapeError(f"CLIP vision: pixel_values must be normalised floats, got {pixel_values.dtype}; "
                             "prepare images with CLIPImageProcessor")
        height, width = pixel_values.shape[-2:]
        if not interpolate_pos_encoding and (height, width) != (size, size):
            raise ShapeError(
                f"CLIP vision: a {height}x{width} image does not match the model's {size}x{size}; resize it "
                "(CLIPImageProcessor does) or pass interpolate_pos_encoding=True"
            )
        if height < self.patch_size or width < self.patch_size:
            raise ShapeError(f"CLIP vision: image {height}x{width} is smaller than one {self.patch_size}-pixel patch")
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))  # (B, d, gh, gw)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # (B, gh·gw, d)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, d)
        table = self.position_embedding.weight
        if grid != (self.grid, self.grid):  # bicubic, as transformers' interpolate_pos_encoding
            table = resize_positions_2d(table, grid, num_prefix_tokens=1)
        return torch.cat((cls, x), dim=1) + table  # (B, 1 + gh·gw, d)


class CLIPVisionTower(nn.Module):
    """CLIP's image encoder (Hugging Face ``CLIPVisionTransformer``): pre-norm in, class token out."""

    def __init__(self, config: "CLIPVisionConfig") -> None:
        super().__init__()
        self.config = config
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_norm = build_norm("layernorm", config.d_model, config.norm_eps)
        self.encoder = Encoder(config.transformer_config())  # no final norm: post_norm acts on the class token
        self.post_norm = build_norm("layernorm", config.d_model, config.norm_eps)

    def forward(self, pixel_values: Tensor, interpolate_pos_encoding: bool = False,
                output_attentions: bool = False, output_hidden_states: bool = False) -> BaseModelOutputWithPooling:
        """Every patch's state (no final norm, as transformers) and the normed class token as ``pooler_output``."""
        h = self.pre_norm(self.embeddings(pixel_values, interpolate_pos_encoding))
        out = self.encoder.run(h, output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        last = out.last_hidden_state
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=self.post_norm(last[:, 0]),
                                          hidden_states=out.hidden_states, attentions=out.attentions)


def init_clip_weights(model: nn.Module, factor: float = 1.0) -> None:
    """CLIP's initialisation (as transformers does it), scaled by ``initializer_factor``.

    Residual-branch inputs shrink with depth (std ∝ 1/sqrt(2·layers)) so the residual stream does
    not grow; projections into the shared space use 1/sqrt(width). Norms start at identity, biases at 0.
    """
    init_weights(model, 0.02 * factor)
    for module in model.modules():
        if isinstance(module, (CLIPTextTower, CLIPVisionTower)):
            d, layers = module.config.d_model, module.config.n_layers
            deep = d ** -0.5 * (2 * layers) ** -0.5 * factor
            for block in module.modules():
                if isinstance(block, Block):
                    for proj in (block.attn.q_proj, block.attn.k_proj, block.attn.v_proj, block.mlp.fc_out):
                        nn.init.normal_(proj.weight, std=deep)
                    nn.init.normal_(block.attn.out_proj.weight, std=d ** -0.5 * factor)
                    nn.init.normal_(block.mlp.fc_in.weight, std=(2 * d) ** -0.5 * factor)
        if isinstance(module, CLIPVisionTower):
            embeddings, std = module.embeddings, module.config.initializer_range * factor
            nn.init.normal_(embeddings.class_embedding, std=module.config.d_model ** -0.5 * factor)
            nn.init.normal_(embeddings.patch_embedding.weight, std=std)
            nn.init.normal_(embeddings.position_embedding.weight, std=std)
    for name, module in model.named_modules():
        if name.endswith(("projection", "proj_a", "proj_b")) and isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features ** -0.5 * factor)
