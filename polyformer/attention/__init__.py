"""Attention mechanisms behind one call: ``build(name, **options)(q, k, v, causal, key_padding_mask)``.

>>> from polyformer import attention
>>> attn = attention.build("dense")
>>> "dense" in attention.list()
True
"""

from polyformer.attention.base import AttentionCache, AttentionMechanism, KVCache
from polyformer.attention.reference import reference_attention
from polyformer.attention.registry import (
    AttentionSpec,
    build,
    list_mechanisms,
    mechanism_class,
    register,
)

list = list_mechanisms  # noqa: A001 - the documented public name: polyformer.attention.list()

__all__ = [
    "AttentionCache",
    "AttentionMechanism",
    "AttentionSpec",
    "KVCache",
    "build",
    "list",
    "list_mechanisms",
    "mechanism_class",
    "reference_attention",
    "register",
]
