"""ImageGPT checkpoints <-> polyformer: GPT-2's literal block rules under ``transformer.``.

iGPT's blocks are GPT-2's (fused, transposed ``c_attn`` Conv1D becoming three ``nn.Linear``
projections) with norms that have no bias; the base model sits under ``transformer.`` on both
sides, and the head (``lm_head`` or the classifier's ``score``) has no bias.
"""

from __future__ import annotations

from polyformer.convert.keymap import KeyMap, Rule
from polyformer.models.gpt_convert import gpt2_block_rules

__all__ = ["imagegpt_key_map"]


def _under_transformer(rule: Rule) -> Rule:
    ours = tuple(f"transformer.{o}" for o in rule.our_keys)
    return Rule(f"transformer.{rule.hf}", ours if len(ours) > 1 else ours[0], rule.to_ours, rule.to_hf)


def imagegpt_key_map(head: str) -> KeyMap:
    """Hugging Face ImageGPT names <-> ours; ``head`` is ``"lm_head"`` or ``"score"``."""
    base = [
        Rule("wte.weight", "wte.weight"),
        Rule("wpe.weight", "wpe.weight"),
        *gpt2_block_rules(norm_bias=False),
        Rule("ln_f.weight", "decoder.final_norm.weight"),
    ]
    rules = [_under_transformer(r) for r in base] + [Rule(f"{head}.weight", f"{head}.weight")]
    # Older transformers versions stored the causal mask as buffers; they carry no weights.
    return KeyMap(rules, ignore=("transformer.h.{}.attn.bias", "transformer.h.{}.attn.masked_bias"))
