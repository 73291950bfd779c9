"""Autoregressive generation for any decoder-only model: sampling, stopping and the generate loop.

>>> import torch
>>> from polyformer.models.gpt import GPTConfig, GPTLMHeadModel
>>> model = GPTLMHeadModel(GPTConfig(vocab_size=50, n_positions=32, d_model=32, n_layers=2, n_heads=4)).eval()
>>> out = generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=5)
>>> out.sequences.shape
torch.Size([1, 8])
"""

from polyformer.generation.loop import (
    CausalLM,
    GenerationConfig,
    GenerationOutput,
    Streamer,
    check_left_padded,
    generate,
    left_padding_positions,
)
from polyformer.generation.sampling import (
    SamplingOptions,
    apply_temperature,
    choose_next,
    filter_logits,
    top_k_filter,
    top_p_filter,
)
from polyformer.generation.stopping import StopStrings, trim_at_stop
from polyformer.generation.streaming import TextStreamer

__all__ = [
    "CausalLM",
    "GenerationConfig",
    "GenerationOutput",
    "SamplingOptions",
    "StopStrings",
    "Streamer",
    "TextStreamer",
    "apply_temperature",
    "check_left_padded",
    "choose_next",
    "filter_logits",
    "generate",
    "left_padding_positions",
    "top_k_filter",
    "top_p_filter",
    "trim_at_stop",
]
