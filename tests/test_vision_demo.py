"""The vision demo section builds in quick mode: a trained ViT's accuracy and an iGPT completion grid."""

import re

from PIL import Image

from polyformer.demo import run_demo


def test_quick_vision_section(tmp_path):
    index = run_demo(tmp_path, quick=True, only=["vision_section"]).read_text()
    assert "ViT and iGPT on MNIST" in index
    accuracy = float(re.search(r"([\d.]+)% test\s+accuracy", index).group(1))
    assert accuracy > 40  # a few seconds of training on 1,000 digits; chance is 10%
    assert re.search(r"[\d.]+ bits per\s+pixel", index)
    grid = Image.open(tmp_path / "igpt_completions.png")
    assert grid.size[0] > grid.size[1]  # rows of prompt, samples and original side by side
