"""Class names of a classification head (``id2label`` / ``label2id`` in ``config.json``), checked."""

from __future__ import annotations

from typing import Any

from polyformer.errors import CheckpointError, ConfigError


def parse_id2label(raw: dict[str, Any], where: str = "config.json") -> dict[int, str] | None:
    """``id2label`` with int keys 0..n-1, or None when absent; clear errors for a broken map.

    ``label2id``, when present, must be its inverse.
    """
    id2label = raw.get("id2label")
    if id2label is None:
        return None
    if not isinstance(id2label, dict) or not id2label:
        raise CheckpointError(f"{where}: id2label must be a non-empty {{index: name}} mapping, got {id2label!r}")
    try:
        out = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        raise CheckpointError(f"{where}: id2label keys must be class indices (0, 1, ...), got {list(id2label)[:5]}") from None
    if sorted(out) != list(range(len(out))):
        raise CheckpointError(
            f"{where}: id2label must number the classes 0..{len(out) - 1} without gaps, got indices {sorted(out)[:10]}"
        )
    label2id = raw.get("label2id")
    if label2id:
        try:
            given = {str(k): int(v) for k, v in label2id.items()}
        except (AttributeError, TypeError, ValueError):
            raise CheckpointError(f"{where}: label2id must be a {{name: index}} mapping, got {label2id!r}") from None
        # Names may repeat in id2label (ImageNet has two 'crane's), so check label2id -> id2label only.
        for name, index in given.items():
            if out.get(index) != name:
                raise CheckpointError(
                    f"{where}: label2id does not match id2label ({name!r} -> {index}, but id2label[{index}] is "
                    f"{out.get(index)!r}); fix or delete label2id"
                )
    return out


def default_id2label(num_labels: int) -> dict[int, str]:
    """Hugging Face's placeholder names ``LABEL_0``, ``LABEL_1``, ..."""
    return {i: f"LABEL_{i}" for i in range(num_labels)}


def resolve_labels(num_labels: int | None, id2label: dict[int, str] | None, where: str) -> dict[int, str]:
    """One consistent label map from ``num_labels`` and/or ``id2label`` (which win when both are given)."""
    if id2label:
        id2label = {int(k): str(v) for k, v in id2label.items()}
        if num_labels is not None and num_labels != len(id2label):
            raise ConfigError(
                f"{where}: num_labels={num_labels} but id2label names {len(id2label)} classes; give one of them"
            )
        if sorted(id2label) != list(range(len(id2label))):
            raise ConfigError(f"{where}: id2label must number the classes 0..{len(id2label) - 1}")
        return id2label
    if num_labels is None:
        num_labels = 2  # Hugging Face's default
    if not isinstance(num_labels, int) or num_labels < 1:
        raise ConfigError(f"{where}: num_labels must be a positive integer, got {num_labels!r}")
    return default_id2label(num_labels)


def labels_to_hf(id2label: dict[int, str]) -> dict[str, Any]:
    """The ``id2label`` / ``label2id`` entries of a Hugging Face config.json."""
    return {
        "id2label": {str(i): name for i, name in sorted(id2label.items())},
        "label2id": {name: i for i, name in sorted(id2label.items())},
    }


def check_head_rows(rows: int, id2label: dict[int, str], weight_name: str, source: str) -> None:
    """The head's output rows must equal the number of labels; name both when they differ."""
    if rows != len(id2label):
        raise CheckpointError(
            f"{source}: {weight_name} has {rows} rows (classes) but config.json id2label names "
            f"{len(id2label)}; the label map does not belong to these weights — fix id2label/label2id "
            "in config.json"
        )
