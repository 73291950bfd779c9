"""Images -> model inputs, as a Hugging Face ``preprocessor_config.json`` describes, on Pillow and NumPy.

:class:`ImageProcessor` follows ``ViTImageProcessor`` step by step: convert to the model's colour
mode, resize with Pillow (``resample`` 2 = bilinear by default), centre crop, rescale (``1/255``)
and normalise (``(x - mean) / std``), giving ``pixel_values`` of shape (B, C, H, W).
:class:`ImageGPTProcessor` adds iGPT's colour palette: each normalised pixel becomes the index of
its nearest palette colour (``ImageGPTImageProcessor``'s ``clusters``), giving ``input_ids`` (B, H·W).

Inputs may be file paths, PIL images, NumPy arrays or torch tensors, alone or in a list of mixed
sizes. Every image is first made an 8-bit image in the model's mode (RGB, or L for one channel):

* transparency (RGBA, LA, palette images with a transparent colour) is composited onto white, as
  Hugging Face's ``convert_to_rgb`` does;
* 16-bit images (Pillow modes ``I;16``, ``I;16B``, ``I;16L``, and ``I`` or ``uint16`` arrays with
  values above 255) are scaled to the 8-bit range, ``round(v / 257)`` (65535 -> 255), rather than
  clipped as Pillow's own ``convert("L")`` would;
* float arrays with values in [0, 1] are scaled by 255 (truncated, as Hugging Face's conversion to
  Pillow does); arrays may be (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from polyformer.errors import ConfigError, DataError
from polyformer.processors.base import missing_files_error, read_json, register_processor

__all__ = [
    "IMAGENET_STANDARD_MEAN",
    "IMAGENET_STANDARD_STD",
    "ImageGPTProcessor",
    "ImageProcessor",
    "fit_palette",
    "load_image",
    "load_image_processor",
    "read_image_processor_config",
    "to_model_mode",
]

IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
CONFIG_NAME = "preprocessor_config.json"
#: a combined processor's file; transformers 5 keeps its image settings there, under "image_processor"
PROCESSOR_CONFIG_NAME = "processor_config.json"
#: Pillow's resampling filters by Hugging Face's integer codes
RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_SIZE_KEYS = ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"}, {"longest_edge"})

ImageInput = Any  # str | Path | PIL.Image.Image | np.ndarray | torch.Tensor


# ------------------------------------------------------------------------------------------------
# Reading and converting images
# ------------------------------------------------------------------------------------------------
def load_image(image: ImageInput, where: str = "image") -> Image.Image:
    """A PIL image from a path, bytes, PIL image, array or tensor, fully decoded, EXIF-rotated.

    A missing, corrupt, truncated or empty file raises :class:`DataError` naming it.
    """
    if isinstance(image, (str, Path)):
        return _open_file(Path(image))
    if isinstance(image, (bytes, bytearray)):
        return _decode(io.BytesIO(image), f"{where} (bytes)")
    if isinstance(image, Image.Image):
        _check_size(image.size, where)
        return ImageOps.exif_transpose(image) if image.getexif() else image
    if hasattr(image, "detach") and hasattr(image, "numpy"):  # a torch tensor
        image = image.detach().cpu().numpy()
    if isinstance(image, np.ndarray):
        return _array_to_pil(image, where)
    raise DataError(
        f"{where}: cannot read an image from {type(image).__name__}; pass a file path, a PIL image or an "
        "array of shape (H, W), (H, W, C) or (C, H, W)"
    )


def _open_file(path: Path) -> Image.Image:
    if not path.exists():
        raise DataError(f"{path}: no such image file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not an image file")
    with open(path, "rb") as handle:
        return _decode(io.BytesIO(handle.read()), str(path))


def _decode(stream: io.BytesIO, where: str) -> Image.Image:
    if not stream.getbuffer().nbytes:
        raise DataError(f"{where}: the file is empty")
    try:
        image = Image.open(stream)
        image.load()  # decode now: a truncated file fails here, not later inside a model
    except UnidentifiedImageError:
        raise DataError(f"{where}: not an image file Pillow can read (corrupt, or another format)") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(
            f"{where}: the image data is truncated or corrupt ({error}); download or save the file again"
        ) from None
    _check_size(image.size, where)
    return ImageOps.exif_transpose(image) if image.getexif() else image


def _check_size(size: tuple[int, int], where: str) -> None:
    if min(size) <= 0:
        raise DataError(f"{where}: the image is empty ({size[0]}x{size[1]} pixels, width x height)")


def _array_to_pil(array: np.ndarray, where: str) -> Image.Image:
    """(H, W), (H, W, C) or (C, H, W) -> an 8-bit PIL image (L, LA, RGB or RGBA)."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channels first -> last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise DataError(
            f"{where}: an image array must be (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4; got shape "
            f"{array.shape}"
        )
    if min(array.shape[:2]) == 0:
        raise DataError(f"{where}: the image is empty (array shape {array.shape})")
    array = _to_uint8(array, where)
    return Image.fromarray(np.ascontiguousarray(array))  # uint8: L, RGB or RGBA by shape


def _to_uint8(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise DataError(f"{where}: integer pixel values must lie in [0, 65535], got [{low}, {high}]")
        return _scale_16_bit(array) if (array.dtype == np.uint16 or high > 255) else array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise DataError(f"{where}: the image array holds NaN or infinite values")
        low, high = float(array.min()), float(array.max())
        if low >= 0 and high <= 1:
            return (array * 255).astype(np.uint8)  # truncation, as Hugging Face's to_pil_image
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        raise DataError(f"{where}: float pixel values must lie in [0, 1] or [0, 255], got [{low:.3g}, {high:.3g}]")
    raise DataError(f"{where}: unsupported pixel dtype {array.dtype}")


def _scale_16_bit(array: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 (v / 257, rounded): full-scale 16-bit white stays white."""
    return np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)


def to_model_mode(image: Image.Image, channels: int) -> Image.Image:
    """An 8-bit image with ``channels`` (3: RGB, 1: L); transparency composited onto white."""
    if channels not in (1, 3):
        raise ConfigError(f"images can be made RGB (3 channels) or grayscale (1), not {channels} channels")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _high_depth_to_l(image)
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    target = "RGB" if channels == 3 else "L"
    return image if image.mode == target else image.convert(target)


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer and float grayscale -> 8-bit L (see the module docstring)."""
    array = np.asarray(image)
    if image.mode == "F":
        return _array_to_pil(array.astype(np.float32), "image")
    if image.mode == "I" and array.size and int(array.max()) <= 255 and int(array.min()) >= 0:
        return Image.fromarray(array.astype(np.uint8))
    return Image.fromarray(_to_uint8(array.astype(np.int64).clip(0, 65535).astype(np.uint16), "image"))


# ------------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------------
def size_dict(size: Any, name: str = "size", default_to_square: bool = True) -> dict[str, int]:
    """Hugging Face's ``size`` forms (int, [h, w], or a dict) as a checked dict."""
    if size is None:
        raise ConfigError(f"{name} is required when resizing or cropping")
    if isinstance(size, int) and not isinstance(size, bool):
        return {"height": size, "width": size} if default_to_square else {"shortest_edge": size}
    if isinstance(size, (list, tuple)):
        if len(size) != 2:
            raise ConfigError(f"{name} as a list must be [height, width], got {size!r}")
        return {"height": int(size[0]), "width": int(size[1])}
    if isinstance(size, dict):
        out = {k: v for k, v in size.items() if v is not None}
        if set(out) not in _SIZE_KEYS:
            raise ConfigError(
                f"{name} must have keys height+width, shortest_edge, or shortest_edge+longest_edge; got {sorted(size)}"
            )
        for key, value in out.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name}[{key!r}] must be a positive integer, got {value!r}")
        return out
    raise ConfigError(f"{name} must be an int, [height, width] or a dict, got {type(size).__name__}")


def output_size(height: int, width: int, size: dict[str, int]) -> tuple[int, int]:
    """(height, width) after resizing to ``size``, with Hugging Face's rounding (``int()``, i.e. floor)."""
    if "height" in size:
        return size["height"], size["width"]
    short_target, longest = size.get("shortest_edge"), size.get("longest_edge")
    if short_target is None:  # longest_edge only: scale the long side down/up to it
        scale = longest / max(height, width)
        return max(1, int(height * scale)), max(1, int(width * scale))
    if longest is None:  # get_resize_output_image_size(default_to_square=False)
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = short_target, int(short_target * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)
    # get_size_with_aspect_ratio(shortest_edge, longest_edge)
    raw = None
    target = short_target
    low, high = float(min(height, width)), float(max(height, width))
    if high / low * target > longest:
        raw = longest * low / high
        target = int(round(raw))
    if (height <= width and height == target) or (width <= height and width == target):
        return height, width
    if width < height:
        return (int(raw * height / width) if raw is not None else int(target * height / width)), target
    return target, (int(raw * width / height) if raw is not None else int(target * width / height))


def center_crop(array: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """Hugging Face's centre crop of a (C, H, W) array, padding with zeros where the image is smaller."""
    _, height, width = array.shape
    ch, cw = crop
    top, left = (height - ch) // 2, (width - cw) // 2
    if top >= 0 and left >= 0 and top + ch <= height and left + cw <= width:
        return array[:, top:top + ch, left:left + cw]
    new_h, new_w = max(ch, height), max(cw, width)
    padded = np.zeros((array.shape[0], new_h, new_w), dtype=array.dtype)
    top_pad, left_pad = ceil((new_h - height) / 2), ceil((new_w - width) / 2)
    padded[:, top_pad:top_pad + height, left_pad:left_pad + width] = array
    top, left = top + top_pad, left + left_pad
    return padded[:, max(0, top):min(new_h, top + ch), max(0, left):min(new_w, left + cw)]


# ------------------------------------------------------------------------------------------------
# The processor
# ------------------------------------------------------------------------------------------------
@dataclass
class ImageProcessor:
    """``ViTImageProcessor`` on Pillow and NumPy; fields keep Hugging Face's names and defaults.

    ``num_channels`` (3 or 1) is the model's colour mode; by default it follows ``image_mean``
    (one value per channel). Unknown keys of a ``preprocessor_config.json`` are kept in ``extra``
    and written back by :meth:`to_dict`.
    """

    do_resize: bool = True
    size: Any = field(default_factory=lambda: {"height": 224, "width": 224})
    resample: int = 2
    do_center_crop: bool = False
    crop_size: Any = None
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: Sequence[float] = IMAGENET_STANDARD_MEAN
    image_std: Sequence[float] = IMAGENET_STANDARD_STD
    num_channels: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    processor_type: str = dataclasses.field(default="ViTImageProcessor", init=False, repr=False)

    def __post_init__(self) -> None:
        if self.do_resize:
            self.size = size_dict(self.size, "size")
        if self.do_center_crop:
            self.crop_size = size_dict(self.crop_size, "crop_size")
            if set(self.crop_size) != {"height", "width"}:
                raise ConfigError(f"crop_size must give height and width, got {self.crop_size}")
        if self.resample not in RESAMPLE_NAMES:
            raise ConfigError(
                f"resample must be one of {sorted(RESAMPLE_NAMES)} ({', '.join(RESAMPLE_NAMES.values())}), got {self.resample!r}"
            )
        self.image_mean = _per_channel(self.image_mean, "image_mean")
        self.image_std = _per_channel(self.image_std, "image_std")
        if any(s == 0 for s in self.image_std):
            raise ConfigError(f"image_std must not contain 0, got {list(self.image_std)}")
        if self.num_channels is None:
            self.num_channels = len(self.image_mean) if len(self.image_mean) in (1, 3) else 3
        if self.num_channels not in (1, 3):
            raise ConfigError(f"num_channels must be 3 (RGB) or 1 (grayscale), got {self.num_channels}")
        for name in ("image_mean", "image_std"):
            values = getattr(self, name)
            if len(values) not in (1, self.num_channels):
                raise ConfigError(f"{name} needs 1 or {self.num_channels} values (one per channel), got {len(values)}")

    # -- Hugging Face preprocessor_config.json --------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = CONFIG_NAME) -> "ImageProcessor":
        """A processor from a ``preprocessor_config.json`` dict (unknown keys kept in ``extra``)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must hold a JSON object, got {type(raw).__name__}")
        names = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "extra"}
        known = {k: v for k, v in raw.items() if k in names}
        extra = {k: v for k, v in raw.items() if k not in names and k != "image_processor_type"}
        try:
            return cls(**known, extra=extra)
        except ConfigError as error:
            raise ConfigError(f"{where}: {error}") from None

    @classmethod
    def from_pretrained(cls, folder: str | Path, **overrides: Any) -> "ImageProcessor":
        """The processor ``folder`` describes (see :func:`read_image_processor_config`), with
        ``overrides`` replacing its settings.

        Called on this base class, the file decides between it and :class:`ImageGPTProcessor`
        (a palette means iGPT's); called on a subclass, the settings load into that subclass.
        """
        raw, path = read_image_processor_config(folder)
        palette = _describes_igpt(raw)
        if cls is ImageProcessor and palette:
            cls = ImageGPTProcessor
        elif palette != issubclass(cls, ImageGPTProcessor):
            described = "iGPT's palette processor" if palette else "a processor without a palette"
            raise ConfigError(f"{path} describes {described}, not a {cls.__name__}; load it with "
                              "AutoImageProcessor.from_pretrained(folder), which picks the class the file names")
        return cls.from_dict({**raw, **overrides}, str(path))

    def to_dict(self) -> dict[str, Any]:
        """The ``preprocessor_config.json`` contents (Hugging Face loads it)."""
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name in ("extra", "processor_type", "num_channels"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["image_processor_type"] = self.processor_type
        if self.num_channels != len(self.image_mean):
            out["num_channels"] = self.num_channels
        return out

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``folder/preprocessor_config.json`` atomically."""
        from polyformer.files import atomic_write_text

        path = Path(folder) / CONFIG_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    # -- processing ---------------------------------------------------------------------------------
    def prepare(self, image: ImageInput, where: str = "image") -> np.ndarray:
        """One image -> float32 (C, H, W): mode, resize, crop, rescale, normalise."""
        pil = to_model_mode(load_image(image, where), self.num_channels)
        if self.do_resize:
            height, width = output_size(pil.height, pil.width, self.size)
            pil = pil.resize((width, height), resample=_PIL_FILTERS[self.resample])
        array = np.asarray(pil)
        array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)  # (C, H, W), uint8
        if self.do_center_crop:
            array = center_crop(array, (self.crop_size["height"], self.crop_size["width"]))
        if self.do_rescale:
            array = (array.astype(np.float64) * self.rescale_factor).astype(np.float32)
        else:
            array = array.astype(np.float32)
        if self.do_normalize:
            mean = np.asarray(self.image_mean, dtype=np.float32)
            std = np.asarray(self.image_std, dtype=np.float32)
            array = ((array.T - mean) / std).T  # broadcast over the channel axis, as Hugging Face does
        return np.ascontiguousarray(array, dtype=np.float32)

    def __call__(self, images: ImageInput | Sequence[ImageInput], return_tensors: str | None = "pt") -> dict[str, Any]:
        """``{"pixel_values": (B, C, H, W)}`` (a torch tensor; NumPy with ``"np"``; a list with None).

        Images of different sizes after processing (resizing to a shortest edge without a crop)
        can only come back as a list (``return_tensors=None``).
        """
        batch = _as_batch(images)
        arrays = [self.prepare(img, _describe(img, i, len(batch))) for i, img in enumerate(batch)]
        return {"pixel_values": _stack(arrays, return_tensors)}


# Pillow filter names for Hugging Face's integer codes (PILImageResampling has the same values).
_PIL_FILTERS = {0: Image.Resampling.NEAREST, 1: Image.Resampling.LANCZOS, 2: Image.Resampling.BILINEAR,
                3: Image.Resampling.BICUBIC, 4: Image.Resampling.BOX, 5: Image.Resampling.HAMMING}


def _per_channel(values: Any, name: str) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        values = [values]
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number or a list of numbers, got {values!r}") from None
    if not out:
        raise ConfigError(f"{name} must not be empty")
    return out


def _as_batch(images: Any) -> list[Any]:
    if isinstance(images, (list, tuple)):
        if not images:
            raise DataError("no images given: pass an image or a non-empty list of images")
        return list(images)
    return [images]


def _describe(image: Any, index: int, total: int) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    return f"image {index}" if total > 1 else "image"


def _stack(arrays: list[np.ndarray], return_tensors: str | None) -> Any:
    if return_tensors is None:
        return arrays
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(
            f"processed images differ in size ({sorted(shapes)}); set size to height+width or enable "
            "do_center_crop, or pass return_tensors=None for a list"
        )
    stacked = np.stack(arrays)
    if return_tensors == "np":
        return stacked
    if return_tensors == "pt":
        import torch

        return torch.from_numpy(stacked)
    raise ConfigError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")


# ------------------------------------------------------------------------------------------------
# iGPT: a colour palette, pixels as tokens
# ------------------------------------------------------------------------------------------------
def squared_distances(pixels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """(N, 3) x (K, 3) -> (N, K) squared distances, written as Hugging Face writes them."""
    a2 = np.sum(np.square(pixels), axis=1)
    b2 = np.sum(np.square(clusters.T), axis=0)
    return a2[:, None] - 2 * np.matmul(pixels, clusters.T) + b2[None, :]


@dataclass
class ImageGPTProcessor(ImageProcessor):
    """``ImageGPTImageProcessor``: normalise to [-1, 1], then each pixel -> nearest palette colour.

    ``clusters`` (K, 3) are colours in the normalised space; token ``K`` (= ``vocab_size - 1``) is
    the start-of-image token the model reads first. :meth:`decode` turns tokens back into images.
    """

    size: Any = field(default_factory=lambda: {"height": 32, "width": 32})
    clusters: Any = None
    do_color_quantize: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.processor_type = "ImageGPTImageProcessor"
        if self.clusters is not None:
            clusters = np.asarray(self.clusters, dtype=np.float64)
            if clusters.ndim != 2 or clusters.shape[1] != 3 or len(clusters) < 2:
                raise ConfigError(f"clusters must be a (K, 3) list of colours with K >= 2, got shape {clusters.shape}")
            self.clusters = clusters
        elif self.do_color_quantize:
            raise ConfigError("clusters are required for colour quantisation (fit them with fit_palette)")

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of every processed image (iGPT needs a fixed size)."""
        if not self.do_resize or "height" not in self.size:
            raise ConfigError("ImageGPTProcessor needs size={'height', 'width'} (a fixed token count)")
        return self.size["height"], self.size["width"]

    def prepare_rgb(self, image: ImageInput, where: str = "image") -> np.ndarray:
        """(3, H, W) normalised RGB (grayscale images are repeated over the three channels)."""
        array = self.prepare(image, where)
        return np.repeat(array, 3, axis=0) if array.shape[0] == 1 else array

    def quantize(self, arrays: np.ndarray) -> np.ndarray:
        """(B, 3, H, W) normalised pixels -> (B, H·W) int64 palette indices (raster order)."""
        b, _, h, w = arrays.shape
        pixels = arrays.transpose(0, 2, 3, 1).reshape(-1, 3)
        ids = np.argmin(squared_distances(pixels, self.clusters), axis=1)
        return ids.reshape(b, h * w).astype(np.int64)

    def __call__(self, images: ImageInput | Sequence[ImageInput], return_tensors: str | None = "pt") -> dict[str, Any]:
        """``{"input_ids": (B, H·W)}`` palette indices (or ``pixel_values`` without quantisation)."""
        batch = _as_batch(images)
        arrays = [self.prepare_rgb(img, _describe(img, i, len(batch))) for i, img in enumerate(batch)]
        if not self.do_color_quantize:
            return {"pixel_values": _stack(arrays, return_tensors)}
        ids = self.quantize(_stack(arrays, "np"))
        if return_tensors == "pt":
            import torch

            return {"input_ids": torch.from_numpy(ids)}
        return {"input_ids": ids if return_tensors == "np" else list(ids)}

    def decode(self, ids: Any, shape: tuple[int, int] | None = None) -> list[Image.Image]:
        """(B, H·W) palette indices -> RGB PIL images (``rint(127.5 · (colour + 1))``)."""
        ids = np.asarray(ids.detach().cpu() if hasattr(ids, "detach") else ids)
        ids = ids[None] if ids.ndim == 1 else ids
        h, w = shape or self.image_shape
        if ids.shape[-1] != h * w:
            raise DataError(f"decode: {ids.shape[-1]} tokens do not make a {h}x{w} image")
        if ids.min() < 0 or ids.max() >= self.n_clusters:
            raise DataError(f"decode: token ids must lie in [0, {self.n_clusters}) (palette colours)")
        colours = np.rint(127.5 * (self.clusters[ids] + 1.0)).clip(0, 255).astype(np.uint8)  # (B, H·W, 3)
        return [Image.fromarray(c.reshape(h, w, 3)) for c in colours]

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["clusters"] = None if self.clusters is None else np.asarray(self.clusters).tolist()
        out["do_color_quantize"] = self.do_color_quantize
        return out


def fit_palette(
    pixels: np.ndarray, n_colors: int, *, iterations: int = 30, seed: int = 0, grayscale: bool = False
) -> np.ndarray:
    """k-means colours (K, 3) for normalised pixels (N, 3) in [-1, 1] (k-means++ start, Lloyd steps).

    With ``grayscale`` the pixels' first channel is clustered in one dimension and each centre is
    repeated over R, G and B, so grey images stay grey. Clusters are sorted from dark to bright.
    """
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 3)
    if n_colors < 2 or n_colors > len(pixels):
        raise ConfigError(f"fit_palette: n_colors must be in [2, {len(pixels)}] (number of pixels), got {n_colors}")
    data = pixels[:, :1] if grayscale else pixels
    rng = np.random.default_rng(seed)
    centres = data[[rng.integers(len(data))]]
    for _ in range(1, n_colors):  # k-means++: far points are likelier next centres
        d = np.min(((data[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        probs = d / d.sum() if d.sum() > 0 else np.full(len(d), 1 / len(d))
        centres = np.vstack([centres, data[rng.choice(len(data), p=probs)]])
    for _ in range(iterations):
        assign = np.argmin(((data[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        moved = np.array([data[assign == k].mean(0) if np.any(assign == k) else centres[k] for k in range(n_colors)])
        if np.allclose(moved, centres):
            break
        centres = moved
    centres = np.repeat(centres, 3, axis=1) if grayscale else centres
    return centres[np.argsort(centres.sum(1))]



def read_image_processor_config(folder: str | Path) -> tuple[dict[str, Any], Path]:
    """A folder's image processor settings and the file they are in: ``preprocessor_config.json``,
    else the ``image_processor`` section of ``processor_config.json``, where ``transformers`` 5
    writes them when it saves a combined processor (``CLIPProcessor``, say) without a
    ``preprocessor_config.json``. A folder with neither raises a :class:`DataError` naming the fix."""
    folder = Path(folder)
    path = folder / CONFIG_NAME
    if path.is_file():
        return read_json(path), path
    combined = folder / PROCESSOR_CONFIG_NAME
    if combined.is_file():
        section = read_json(combined).get("image_processor")
        if isinstance(section, dict):
            return section, combined
    raise missing_files_error(folder, CONFIG_NAME, "image_processor.save_pretrained(folder) (an image model "
                              "folder needs the processor it was trained with)")


def _describes_igpt(raw: dict[str, Any]) -> bool:
    """Whether image processor settings are iGPT's (a palette, or iGPT's class named)."""
    return "clusters" in raw or str(raw.get("image_processor_type", "")).startswith("ImageGPT")


def load_image_processor(folder: str | Path) -> ImageProcessor:
    """The processor a model folder describes, by its settings alone (iGPT's when they have a
    palette); :class:`~polyformer.processors.auto.AutoImageProcessor` also reads the class they name."""
    return ImageProcessor.from_pretrained(folder)


# Hugging Face's names for these processors, and the model types whose folders use them
register_processor("image_processor", ImageProcessor, names=["ViTImageProcessor", "ViTImageProcessorFast"], model_types=["vit"])
register_processor("image_processor", ImageGPTProcessor, names=["ImageGPTImageProcessor", "ImageGPTImageProcessorFast"],
                   model_types=["imagegpt"])
