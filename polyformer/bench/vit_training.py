"""One ViT training step on large images, measured in a fresh interpreter (time and peak memory)."""

from __future__ import annotations

from typing import Any

import torch


def measure_vit_step(image_size: int, patch_size: int, d_model: int, n_layers: int, n_heads: int, batch: int,
                     attention: Any, repeats: int = 2, max_seconds: float = 120.0) -> dict[str, Any]:
    """Forward + backward + AdamW step of a ViT classifier on random ``image_size``² images."""
    from polyformer.bench.measure import time_and_memory
    from polyformer.models.vit import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=image_size, patch_size=patch_size, d_model=d_model, n_layers=n_layers,
                       n_heads=n_heads, d_ff=4 * d_model, num_labels=10, attention=attention)
    model = ViTForImageClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    pixels = torch.randn(batch, 3, image_size, image_size)
    labels = torch.randint(0, 10, (batch,))

    def step() -> None:
        loss = model(pixels, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    result = time_and_memory(step, repeats=repeats, max_seconds=max_seconds)
    return {**result, "tokens": config.num_patches + 1}
