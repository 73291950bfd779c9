"""The CLIP demo section at tiny size: the similarity picture of a batch and the held-out tables."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("easy_vqa")


def test_clip_section_draws_the_batch_and_tabulates_held_out_results(tmp_path, monkeypatch):
    import polyformer.data.shapes as shapes
    import polyformer.demo.clip_section as section
    from polyformer.demo import run_demo
    from polyformer.recipes.clip import CLIPShapesOptions

    train, test = shapes.load_shapes()
    # every class once in the test subset (the drawn batch needs eight of them), a few more at random
    firsts = [int(np.flatnonzero(test.classes == c)[0]) for c in range(24)]
    small = (train.take(np.arange(120)), test.take(np.array(firsts + list(range(40)))))
    monkeypatch.setattr(shapes, "load_shapes", lambda: small)
    monkeypatch.setattr(section, "quick_options", lambda: CLIPShapesOptions(
        d_model=16, d_ff=32, projection_dim=16, n_layers=1, n_heads=2, patch_size=16, steps=4, batch_size=16,
        warmup_steps=1, captions_per_image=2, threads=None))
    index = run_demo(tmp_path, quick=True, only=["clip_section"]).read_text()
    assert "CLIP trained here on coloured shapes" in index
    for combination in ("red circle", "blue rectangle", "yellow triangle", "gray circle"):
        assert f"<td>{combination}</td>" in index
    assert re.search(r"<td>zero-shot, prompt ensemble</td><td>[\d.]+</td>", index)
    assert re.search(r"\d of 8 images give their own caption", index)
    picture = Image.open(tmp_path / "clip_similarity.png")
    assert picture.size[0] > picture.size[1]
    assert not (tmp_path / "clip-shapes").exists()  # the model folder was temporary
