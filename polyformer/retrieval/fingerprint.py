"""A fingerprint of a model folder: the same for the same weights and image preprocessing,
different when either changes, so an index can tell whether a model's vectors belong to it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from polyformer.errors import DataError

__all__ = ["model_fingerprint"]

# keys that say who wrote config.json, not what the model computes
_VOLATILE_CONFIG_KEYS = frozenset({"transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype",
                                   "_commit_hash", "polyformer"})
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.pt")


def model_fingerprint(folder: str | Path) -> str:
    """Hex SHA-256 over the folder's weights, its ``config.json`` and its ``preprocessor_config.json``.

    Safetensors weights are hashed tensor by tensor (name, dtype, shape, values) rather than as
    file bytes, so the same weights saved by ``transformers`` and by polyformer (whose file headers
    differ) give the same fingerprint; other weight files are hashed as bytes. The two JSON files
    are hashed with their keys sorted and without the keys that only record who wrote them.
    """
    folder = Path(folder)
    weights = sorted({p for pattern in _WEIGHT_PATTERNS for p in folder.glob(pattern)})
    if not weights:
        raise DataError(f"{folder}: no weights file (*.safetensors, pytorch_model.bin); give a model folder")
    digest = hashlib.sha256()
    for name in ("config.json", "preprocessor_config.json"):
        path = folder / name
        if path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                raise DataError(f"{path} is not valid JSON ({error})") from None
            if isinstance(raw, dict) and name == "config.json":
                raw = {k: v for k, v in raw.items() if k not in _VOLATILE_CONFIG_KEYS}
            digest.update(f"{name}\0{json.dumps(raw, sort_keys=True)}\0".encode())
    for path in weights:
        if path.suffix == ".safetensors":
            _hash_safetensors(path, digest)
        else:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _hash_safetensors(path: Path, digest: "hashlib._Hash") -> None:
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            for name in sorted(handle.keys()):
                tensor = handle.get_tensor(name).contiguous()
                digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
                digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    except SafetensorError as error:
        raise DataError(f"{path}: not a readable safetensors file ({error})") from None

