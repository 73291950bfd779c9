"""Demo section: a CLIP trained here on coloured shapes — its similarity matrix and the held-out results.

The ``clip-shapes`` recipe (:mod:`polyformer.recipes.clip`) trains both towers from scratch with
four colour x shape combinations kept out of training, then classifies the test images zero-shot
over all 24 combinations. The section draws the image x caption similarities of one batch (held-out
combinations included) and tabulates accuracy overall, on the held-out combinations and on the
seen ones, beside the prompt ensemble and the linear probes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from polyformer.demo.report import Report, Section

#: the batch drawn: one test image of each, the held-out combinations first
BATCH = ("red circle", "blue rectangle", "yellow triangle", "gray circle", "red triangle", "blue circle",
         "yellow rectangle", "green triangle")


def quick_options() -> Any:
    """The reduced recipe of the quick report: a narrower, shorter run (about a minute on 2 cores)."""
    from polyformer.recipes.clip import CLIPShapesOptions

    return CLIPShapesOptions(d_model=48, d_ff=192, projection_dim=48, n_layers=2, n_heads=4, steps=200,
                             batch_size=64, warmup_steps=20, threads=None)


def add_section(report: Report, quick: bool) -> None:
    from polyformer.data.shapes import load_shapes
    from polyformer.recipes.clip import CLIPShapesOptions, train_clip_shapes

    section = report.section("Two towers: CLIP trained here on coloured shapes")
    options = quick_options() if quick else CLIPShapesOptions(threads=None, time_budget_s=300)
    data = load_shapes()
    # a fresh folder each time: a report rebuilt with other settings must not resume an old run
    with tempfile.TemporaryDirectory(prefix="polyformer-demo-clip-") as folder:
        result = train_clip_shapes(options, Path(folder) / "clip-shapes", data=data, progress=False)
    m = result.metrics
    section.text(
        f"A CLIP with two {options.n_layers}-layer towers of width {options.d_model} ({m['parameters']:,} parameters, "
        f"most of them the 49,408-row embedding of the exact CLIP tokenizer) was trained from scratch for "
        f"{m['steps']} steps ({m['train_seconds']:.0f} s) on {m['train_pairs']:,} easy-VQA images with captions in "
        f"varied wordings, with four colour x shape combinations held out of training. The loss is CLIP's symmetric "
        f"cross-entropy; the temperature is learnt and clamped at 100 (it ended at {m['logit_scale']:.1f})."
        + (f" Quick mode: a reduced run ({options.steps} steps of {options.batch_size}); composing the held-out "
           "combinations comes late in training, so they need the full recipe, `polyformer train clip-shapes` "
           "(600 steps of 128, about three minutes)." if quick else "")
    )
    _similarity_figure(report, section, result, data[1])
    _results_tables(section, m)
    section.code("polyformer train clip-shapes --out runs/clip-shapes\n"
                 "polyformer clip classify IMAGE.png --model runs/clip-shapes --labels 'red circle' 'blue triangle'")


def _batch_indices(test: Any) -> list[int]:
    from polyformer.data.shapes import CLASS_NAMES

    return [int(np.flatnonzero(test.classes == CLASS_NAMES.index(name))[0]) for name in BATCH]


def _similarity_figure(report: Report, section: Section, result: Any, test: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from polyformer.data.shapes import HELD_OUT

    rows = _batch_indices(test)
    captions = [f"a photo of a {name}" for name in BATCH]
    inputs = result.processor(text=captions, images=[test.images[i] for i in rows], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = result.model(**inputs).logits_per_image  # (images, captions)
    probs = logits.softmax(dim=1).numpy()
    held = {f"{c} {s}" for c, s in HELD_OUT}

    fig, ax = plt.subplots(figsize=(8, 6.4))
    image = ax.imshow(probs, vmin=0, vmax=1, cmap="viridis")
    # the batch's images, one beside each row, in the same axes
    strip = np.concatenate([test.images[i] for i in rows], axis=0)
    ax.imshow(strip, extent=(-1.6, -0.6, len(BATCH) - 0.5, -0.5))
    ax.set_xlim(-1.6, len(BATCH) - 0.5)
    ax.set_xticks(range(len(BATCH)), [c + (" *" if n in held else "") for c, n in zip(captions, BATCH)],
                  rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(BATCH)), [n + (" *" if n in held else "") for n in BATCH], fontsize=8)
    for i in range(len(BATCH)):
        for j in range(len(BATCH)):
            ax.text(j, i, f"{probs[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="black" if probs[i, j] > 0.5 else "white")
    fig.colorbar(image, ax=ax, label="softmax over the captions", shrink=0.8)
    ax.set_title("test images (rows) x captions (columns); * held out of training", fontsize=10)
    fig.tight_layout()
    fig.savefig(report.path("clip_similarity.png"), dpi=110)
    plt.close(fig)
    right = int((probs.argmax(axis=1) == np.arange(len(BATCH))).sum())
    section.text(f"One test batch: each image's probabilities over the eight captions "
                 f"(logits_per_image.softmax(dim=1), as the CLIP example in the chapter computes them). {right} of "
                 f"8 images give their own caption the highest probability; the first four combinations were never "
                 f"seen in training.")
    section.figure("clip_similarity.png", "CLIP similarities of a batch of test images and captions")


def _results_tables(section: Section, m: dict[str, Any]) -> None:
    via = ("through pipeline('zero-shot-image-classification') on the saved folder" if m["ensemble_via"] == "pipeline"
           else "computed directly: the zero-shot pipeline is not available")
    section.text(f"Classification of the {m['test_images']:,} test images over all 24 colour x shape classes "
                 f"(chance {m['chance']:.1%}); {m['held_out_test_images']} of them show a held-out combination. "
                 f"The prompt ensemble averages the text embeddings of nine wordings per class ({via}). "
                 "The 24-class probe is trained on every "
                 "training image, held-out combinations included, so it is a reference for what the image "
                 "embedding holds; the colour and shape probes never see the held-out combinations.")
    header = ["method", "all classes", "held-out combinations", "seen combinations"]
    rows = [[label, m[f"{key}_accuracy"], m[f"{key}_held_out_accuracy"], m[f"{key}_seen_accuracy"]]
            for label, key in (("zero-shot, 'a photo of a {}'", "zero_shot"),
                               ("zero-shot, prompt ensemble", "ensemble"),
                               ("linear probe, 24 classes (sees held-out labels)", "probe"),
                               ("colour probe + shape probe", "factored_probe"))]
    section.table(header, rows)
    section.table(["held-out combination", "test images", "zero-shot", "prompt ensemble", "chosen most often"],
                  [[r["combination"], r["test_images"], r["zero_shot_accuracy"], r["ensemble_accuracy"],
                    r["most_chosen"]] for r in m["held_out"]])
