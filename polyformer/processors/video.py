"""Videos -> ``pixel_values`` (B, T, C, H, W), as ``transformers`` prepares them for TimeSformer.

For a TimeSformer folder ``transformers`` picks ``VideoMAEImageProcessor`` (its Pillow twin
``VideoMAEImageProcessorPil`` when torchvision is missing) from ``preprocessor_config.json``, or
``TimesformerVideoProcessor`` from ``video_preprocessor_config.json`` (that one needs torchvision).
Both do, frame by frame: RGB, resize the shortest edge (bilinear), centre crop, rescale by 1/255,
normalise; they differ only in their default mean / std (0.5 for VideoMAE's, ImageNet's
0.485/0.456/0.406 and 0.229/0.224/0.225 for TimeSformer's video processor). :class:`VideoProcessor`
reads either file, writes back the one it came from, and gives the same pixel values.

    processor = VideoProcessor.from_pretrained("my-timesformer")
    frames = load_video("clip.gif", num_frames=8)             # uniform over the clip
    inputs = processor(frames)                                # {"pixel_values": (1, 8, 3, 224, 224)}

Frame reading and sampling live in :mod:`polyformer.processors.video_inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from polyformer.errors import ConfigError, DataError
from polyformer.processors.base import missing_files_error, read_json, register_processor
from polyformer.processors.image import (
    _PIL_FILTERS,
    CONFIG_NAME,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    ImageProcessor,
    center_crop,
    output_size,
    to_model_mode,
)
from polyformer.processors.video_inputs import as_video_batch, describe, load_video, sample_indices

__all__ = ["IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD", "VIDEO_CONFIG_NAME", "VideoProcessor", "load_video",
           "sample_indices"]

#: the file transformers' video processors (TimesformerVideoProcessor) read and write
VIDEO_CONFIG_NAME = "video_preprocessor_config.json"
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
_VIDEO_PROCESSOR_NAMES = ("TimesformerVideoProcessor",)
# keys of a video processor file that describe sampling or output, not pixels: kept, written back
_TYPE_KEYS = ("image_processor_type", "video_processor_type")


@dataclass
class VideoProcessor(ImageProcessor):
    """TimeSformer's processor: :class:`ImageProcessor`'s steps on every frame, (B, T, C, H, W) out.

    Defaults are ``VideoMAEImageProcessor``'s; :meth:`for_video_processor_file` gives
    ``TimesformerVideoProcessor``'s. An integer ``size`` means the shortest edge (as in those
    classes). Frames are always made RGB: grayscale frames are repeated over three channels and
    transparency is composited onto white.
    """

    size: Any = field(default_factory=lambda: {"shortest_edge": 224})
    do_center_crop: bool = True
    crop_size: Any = field(default_factory=lambda: {"height": 224, "width": 224})
    image_mean: Sequence[float] = IMAGENET_STANDARD_MEAN
    image_std: Sequence[float] = IMAGENET_STANDARD_STD
    #: which file the settings came from and go back to: preprocessor_config.json or video_preprocessor_config.json
    file_name: str = field(default=CONFIG_NAME, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.size, int) and not isinstance(self.size, bool):
            self.size = {"shortest_edge": self.size}  # transformers' VideoMAE reads an int size this way
        if isinstance(self.crop_size, int) and not isinstance(self.crop_size, bool):
            self.crop_size = {"height": self.crop_size, "width": self.crop_size}
        super().__post_init__()
        if self.num_channels != 3:
            raise ConfigError(f"TimeSformer takes RGB frames; num_channels must be 3, got {self.num_channels}")
        if self.file_name not in (CONFIG_NAME, VIDEO_CONFIG_NAME):
            raise ConfigError(f"file_name must be {CONFIG_NAME} or {VIDEO_CONFIG_NAME}, got {self.file_name!r}")
        self.processor_type = "VideoMAEImageProcessor" if self.file_name == CONFIG_NAME else "TimesformerVideoProcessor"

    @classmethod
    def for_video_processor_file(cls, **settings: Any) -> "VideoProcessor":
        """``TimesformerVideoProcessor``'s defaults (ImageNet mean / std), saved as
        ``video_preprocessor_config.json``."""
        defaults = {"image_mean": IMAGENET_DEFAULT_MEAN, "image_std": IMAGENET_DEFAULT_STD,
                    "file_name": VIDEO_CONFIG_NAME}
        return cls(**{**defaults, **settings})

    # -- files ------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, **overrides: Any) -> "VideoProcessor":
        """Settings from ``folder/preprocessor_config.json`` (VideoMAE's), else from
        ``video_preprocessor_config.json`` (TimesformerVideoProcessor's, whose defaults differ)."""
        folder = Path(folder)
        image_file, video_file = folder / CONFIG_NAME, folder / VIDEO_CONFIG_NAME
        if image_file.is_file():
            raw, path = read_json(image_file), image_file
        elif video_file.is_file():
            raw, path = read_json(video_file), video_file
            raw = {"image_mean": IMAGENET_DEFAULT_MEAN, "image_std": IMAGENET_DEFAULT_STD, **raw}
        else:
            raise missing_files_error(folder, f"{CONFIG_NAME} or {VIDEO_CONFIG_NAME}",
                                      "processor.save_pretrained(folder) (a video model needs the processor it "
                                      "was trained with)")
        named = raw.get("image_processor_type") or raw.get("video_processor_type")
        if named is not None and named not in _NAMES:
            raise ConfigError(f"{path} names {named!r}, not a TimeSformer / VideoMAE processor "
                              f"({', '.join(sorted(_NAMES))})")
        return cls.from_dict({**raw, **overrides, "file_name": path.name}, str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = CONFIG_NAME) -> "VideoProcessor":
        """A processor from a config dict; unknown keys (sampling settings, ...) are kept and written back."""
        raw = {k: v for k, v in raw.items() if k not in _TYPE_KEYS}
        return super().from_dict(raw, where)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """The file's contents, typed as ``transformers`` types it (by the file they go to)."""
        out = super().to_dict()
        out.pop("file_name", None)
        if self.file_name == VIDEO_CONFIG_NAME:
            out.pop("image_processor_type", None)
            out["video_processor_type"] = self.processor_type
        return out

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``folder/<file_name>`` atomically (the file the settings were read from)."""
        import json

        from polyformer.files import atomic_write_text

        path = Path(folder) / self.file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    # -- processing -------------------------------------------------------------------------------
    def prepare_video(self, video: Any, where: str = "video", num_frames: int | None = None,
                      sampling: str | int = "uniform") -> torch.Tensor:
        """One video -> float32 (T, C, H, W)."""
        frames = load_video(video, num_frames, sampling, where)
        stack = np.stack([self._resized(frame) for frame in frames])  # (T, C, H, W) uint8
        return self._rescale_normalise(torch.from_numpy(stack))

    def _resized(self, frame: Any) -> np.ndarray:
        """A frame, RGB, resized and cropped: (C, H, W) uint8 (the float steps run on the whole clip)."""
        pil = to_model_mode(frame, 3)
        if self.do_resize:
            height, width = output_size(pil.height, pil.width, self.size)
            if (height, width) != (pil.height, pil.width):
                pil = pil.resize((width, height), resample=_PIL_FILTERS[self.resample])
        array = np.moveaxis(np.asarray(pil), -1, 0)
        if self.do_center_crop:
            array = center_crop(array, (self.crop_size["height"], self.crop_size["width"]))
        return array

    def _rescale_normalise(self, stack: torch.Tensor) -> torch.Tensor:
        """(T, C, H, W) uint8 -> float32, in the same floating-point steps as :meth:`ImageProcessor.prepare`
        (rescale in float64, then float32; normalise in float32), so the values are bit for bit the same."""
        if self.do_rescale:
            out = (stack.to(torch.float64) * self.rescale_factor).to(torch.float32)
        else:
            out = stack.to(torch.float32)
        if self.do_normalize:
            mean = torch.tensor(self.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(self.image_std, dtype=torch.float32).view(1, -1, 1, 1)
            out = (out - mean) / std
        return out.contiguous()

    def __call__(self, videos: Any, return_tensors: str | None = "pt", num_frames: int | None = None,
                 sampling: str | int = "uniform") -> dict[str, Any]:
        """``{"pixel_values": (B, T, C, H, W)}`` for a video or a list of videos (any form
        :func:`load_video` reads); ``num_frames`` / ``sampling`` pick frames first (default: all).

        ``return_tensors``: ``"pt"`` (default), ``"np"``, or None for a list of (T, C, H, W) arrays
        (videos of different lengths or, without a crop, sizes).
        """
        batch, _ = as_video_batch(videos)
        clips = [self.prepare_video(v, describe(v, i, len(batch)), num_frames, sampling) for i, v in enumerate(batch)]
        if return_tensors is None:
            return {"pixel_values": [c.numpy() for c in clips]}
        shapes = {tuple(c.shape) for c in clips}
        if len(shapes) > 1:
            raise DataError(f"processed videos differ in shape {sorted(shapes)} (T, C, H, W); pass num_frames to take "
                            "as many frames from each, enable do_center_crop, or return_tensors=None for a list")
        stacked = torch.stack(clips)
        if return_tensors == "pt":
            return {"pixel_values": stacked}
        if return_tensors == "np":
            return {"pixel_values": stacked.numpy()}
        raise ConfigError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")


_NAMES = ("VideoMAEImageProcessor", "VideoMAEImageProcessorPil", "VideoMAEImageProcessorFast",
          "VideoMAEFeatureExtractor", *_VIDEO_PROCESSOR_NAMES)

# transformers' names for TimeSformer's processors; a timesformer folder with neither file's type uses this one
register_processor("image_processor", VideoProcessor, names=list(_NAMES), model_types=["timesformer"])
register_processor("processor", VideoProcessor, model_types=["timesformer"])
