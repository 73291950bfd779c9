"""Raw inputs -> model inputs: text through Hugging Face's ``tokenizers`` (GPT-2 byte-level BPE)."""

from polyformer.processors.text import TextTokenizer, train_bpe

__all__ = ["TextTokenizer", "train_bpe"]
