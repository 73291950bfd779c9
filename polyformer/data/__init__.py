"""Data: offline corpora and data sets (text, MNIST), tokenizers, memory-mapped token files."""

from polyformer.data.corpus import Document, fetch_corpus, list_corpora, load_corpus
from polyformer.data.prepare import Dataset, PrepareOptions, open_dataset, prepare_corpus
from polyformer.data.tokens import TokenFile, open_tokens, token_dtype, write_tokens

__all__ = [
    "Dataset", "Document", "PrepareOptions", "TokenFile", "fetch_corpus", "list_corpora", "load_corpus",
    "open_dataset", "open_tokens", "prepare_corpus", "token_dtype", "write_tokens",
]
