"""Videos -> lists of PIL frames, and which frames to keep.

:func:`load_video` reads a video given as

* a list of frames (PIL images, arrays, tensors or image file paths);
* an array or tensor ``(T, H, W, C)`` (or ``(T, C, H, W)``), uint8 or float in [0, 1] / [0, 255];
  a ``(T, H, W)`` array is a grayscale video;
* a folder of frame images, read in natural order (``frame_2.png`` before ``frame_10.png``);
* an animated GIF, APNG or WebP, through Pillow;
* any other video file (``.mp4``, ``.avi``, ``.webm``, ...) through PyAV, an optional extra
  (``pip install av`` or ``pip install 'polyformer[video]'``); without it a :class:`DataError`
  names the install command and the codec-free alternatives.

and keeps ``num_frames`` of them (:func:`sample_indices`):

* ``sampling="uniform"``: evenly spaced over the whole clip, first and last frame included. A clip
  with fewer frames than asked is stretched: frames are repeated evenly (``[0, 0, 1, 1, 2, ...]``),
  so the model still sees the whole clip in order, as if slowed down.
* ``sampling=k`` (an int): every k-th frame from the start, with the indices ``transformers``'
  video-classification pipeline computes for ``frame_sampling_rate=k`` (``linspace(0, n·k - 1, n)``
  truncated, so exactly every k-th frame only when ``n = 1`` or ``k = 1``). A clip too short for
  ``n`` frames at that rate raises :class:`DataError` (``transformers`` would pass fewer frames on
  silently); lower the rate or sample uniformly.

Every frame must have the same size (a :class:`DataError` names the first that differs); frames
keep their colour mode (the processor converts grayscale and transparency to RGB).
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from polyformer.errors import ConfigError, DataError
from polyformer.processors.image import _to_uint8, load_image

__all__ = ["PILLOW_VIDEO_SUFFIXES", "VideoInput", "is_single_video", "load_video", "read_frames", "sample_indices"]

VideoInput = Any  # str | Path | Sequence[frame] | np.ndarray | torch.Tensor
#: animated formats Pillow decodes frame by frame
PILLOW_VIDEO_SUFFIXES = (".gif", ".png", ".apng", ".webp")
#: still-image formats accepted as frames inside a folder
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# ------------------------------------------------------------------------------------------------
# Which frames
# ------------------------------------------------------------------------------------------------
def sample_indices(length: int, num_frames: int | None, sampling: str | int = "uniform",
                   where: str = "video") -> list[int]:
    """The frame indices to keep from a clip of ``length`` frames (see the module docstring)."""
    if num_frames is not None and (not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1):
        raise ConfigError(f"num_frames must be a positive integer or None (all frames), got {num_frames!r}")
    step = _check_sampling(sampling)
    if length < 1:
        raise DataError(f"{where}: the video has no frames")
    if step is None:
        if num_frames is None:
            return list(range(length))
        return np.rint(np.linspace(0, length - 1, num_frames)).astype(np.int64).tolist()
    if num_frames is None:
        return list(range(0, length, step))
    # transformers' frame_sampling_rate indices: n points from 0 to n*k - 1, truncated
    indices = np.linspace(0, num_frames * step - 1, num=num_frames).astype(np.int64).tolist()
    if indices[-1] >= length:
        raise DataError(
            f"{where}: {num_frames} frames at a sampling rate of {step} need {indices[-1] + 1} frames but the video "
            f"has {length}; lower frame_sampling_rate (at most {_largest_rate(length, num_frames)}) or num_frames, or "
            "sample uniformly over the clip"
        )
    return indices


def _largest_rate(length: int, num_frames: int) -> int:
    """The largest rate whose indices fit in ``length`` frames (1 when even that does not)."""
    return max(1, length // num_frames)


def _check_sampling(sampling: str | int) -> int | None:
    """None for uniform sampling, else the step."""
    if sampling == "uniform":
        return None
    if isinstance(sampling, int) and not isinstance(sampling, bool) and sampling >= 1:
        return sampling
    raise ConfigError(f"sampling must be 'uniform' or a positive integer step (every k-th frame), got {sampling!r}")


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
def load_video(video: VideoInput, num_frames: int | None = None, sampling: str | int = "uniform",
               where: str | None = None) -> list[Image.Image]:
    """The ``num_frames`` frames of ``video`` that ``sampling`` picks, as PIL images of one size."""
    where = where or (str(video) if isinstance(video, (str, Path)) else "video")
    if isinstance(video, (str, Path)) and _is_codec_file(Path(video)):
        return _read_with_pyav(Path(video), num_frames, sampling, where)  # decodes only the frames it keeps
    frames = read_frames(video, where)
    return [frames[i] for i in sample_indices(len(frames), num_frames, sampling, where)]


def read_frames(video: VideoInput, where: str = "video") -> list[Image.Image]:
    """Every frame of ``video`` (any form but a codec file) as a PIL image; all of one size."""
    if isinstance(video, (str, Path)):
        frames = _read_path(Path(video), where)
    elif hasattr(video, "detach") and hasattr(video, "numpy"):  # a torch tensor
        frames = _array_frames(video.detach().cpu().numpy(), where)
    elif isinstance(video, np.ndarray):
        frames = _array_frames(video, where)
    elif isinstance(video, (list, tuple)):
        if not video:
            raise DataError(f"{where}: the frame list is empty; a video needs at least one frame")
        frames = [load_image(frame, f"{where} frame {i}") for i, frame in enumerate(video)]
    elif isinstance(video, Image.Image):
        raise DataError(f"{where}: one PIL image is not a video; pass a list of frames ([image] for a one-frame video)")
    else:
        raise DataError(f"{where}: cannot read a video from {type(video).__name__}; pass a list of frames, an array "
                        "(T, H, W, C), a folder of frames, an animated GIF/PNG or a video file")
    _check_same_size(frames, where)
    return frames


def _check_same_size(frames: list[Image.Image], where: str) -> None:
    first = frames[0].size
    for i, frame in enumerate(frames):
        if frame.size != first:
            raise DataError(
                f"{where}: frame {i} is {frame.size[0]}x{frame.size[1]} but frame 0 is {first[0]}x{first[1]} (width x "
                "height); every frame of a video must have one size: resize the frames to one size first"
            )


def _array_frames(array: np.ndarray, where: str) -> list[Image.Image]:
    """(T, H, W, C), (T, C, H, W) or (T, H, W) -> frames; the value range is judged over the whole video."""
    if array.ndim == 3 and array.shape[-1] in (3, 4) and array.shape[0] not in (1, 3, 4):
        raise DataError(f"{where}: an array of shape {array.shape} looks like one image (H, W, C); a video is "
                        "(T, H, W, C) — pass array[None] for a one-frame video")
    if array.ndim == 4 and array.shape[1] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 1, -1)  # (T, C, H, W) -> (T, H, W, C)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (3, 4)):
        raise DataError(f"{where}: a video array must be (T, H, W, C), (T, C, H, W) with C in 1, 3, 4, or (T, H, W) "
                        f"for grayscale; got shape {array.shape}")
    if array.shape[0] == 0:
        raise DataError(f"{where}: the video array has no frames (shape {array.shape})")
    if min(array.shape[1:3]) == 0:
        raise DataError(f"{where}: the frames are empty (array shape {array.shape})")
    # one conversion for the whole clip: a dark frame of a float video is not rescaled differently
    array = _to_uint8(array, where)
    return [Image.fromarray(np.ascontiguousarray(frame)) for frame in array]


def _read_path(path: Path, where: str) -> list[Image.Image]:
    if not path.exists():
        raise DataError(f"{path}: no such video file or folder of frames")
    if path.is_dir():
        return _read_folder(path)
    return _read_animated(path, where)


def _natural_key(path: Path) -> list[Any]:
    """``frame_2`` before ``frame_10``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _read_folder(folder: Path) -> list[Image.Image]:
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES),
                   key=_natural_key)
    if not files:
        raise DataError(f"{folder}: the folder holds no frame images ({', '.join(FRAME_SUFFIXES)})")
    return [load_image(p, str(p)) for p in files]


def _read_animated(path: Path, where: str) -> list[Image.Image]:
    """Every frame of a GIF / APNG / WebP (a still image is a one-frame video)."""
    data = path.read_bytes()
    if not data:
        raise DataError(f"{where}: the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
        frames = []
        for frame in ImageSequence.Iterator(image):
            # GIF frames are palette images over the previous frame: RGBA keeps what Pillow composited
            if frame.mode in ("L", "RGB"):
                frames.append(frame.copy())
            else:
                frames.append(frame.convert("RGBA" if _has_alpha(frame) else "RGB"))
    except UnidentifiedImageError:
        raise DataError(f"{where}: not a video or animated image Pillow can read (corrupt, or another format); "
                        "video files need PyAV (pip install av)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise DataError(f"{where}: the animation is truncated or corrupt ({error}); save the file again") from None
    if not frames:
        raise DataError(f"{where}: the animation has no frames")
    return frames


def _has_alpha(frame: Image.Image) -> bool:
    return "A" in frame.getbands() or "transparency" in frame.info


def _is_codec_file(path: Path) -> bool:
    """A file that is neither a folder nor a format Pillow animates (so PyAV must read it)."""
    suffix = path.suffix.lower()
    return path.is_file() and suffix not in PILLOW_VIDEO_SUFFIXES and suffix not in FRAME_SUFFIXES


def _read_with_pyav(path: Path, num_frames: int | None, sampling: str | int, where: str) -> list[Image.Image]:
    try:
        import av
    except ImportError:
        raise DataError(
            f"{where}: reading {path.suffix or 'this'} video files needs PyAV: pip install av (or pip install "
            "'polyformer[video]'); without it, pass the frames as a list of images, an array (T, H, W, C), a folder "
            "of frames or an animated GIF/PNG"
        ) from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{where}: the file has no video stream")
            frames = [frame.to_image() for frame in container.decode(video=0)]
    except av.error.FFmpegError as error:  # type: ignore[attr-defined]
        raise DataError(f"{where}: PyAV cannot decode the file ({error}); is it a video, and complete?") from None
    if not frames:
        raise DataError(f"{where}: the video has no frames")
    _check_same_size(frames, where)
    return [frames[i] for i in sample_indices(len(frames), num_frames, sampling, where)]


def is_single_video(videos: Any) -> bool:
    """Whether ``videos`` is one video rather than a batch of them.

    A batch is a 5-D array, or a list whose items are themselves videos (lists of frames, 4-D
    arrays, or paths: a list of paths is a list of video files / folders, as ``transformers``'
    pipeline takes it; frames on disk are passed as their folder). Anything else is one video.
    """
    if isinstance(videos, np.ndarray) or (hasattr(videos, "detach") and hasattr(videos, "dim")):
        return videos.ndim != 5
    if isinstance(videos, (list, tuple)) and videos:
        first = videos[0]
        if isinstance(first, (str, Path, list, tuple)):
            return False
        if isinstance(first, np.ndarray) or hasattr(first, "detach"):
            return first.ndim < 4
    return True


def as_video_batch(videos: Any) -> tuple[list[Any], bool]:
    """(list of videos, whether one video was passed)."""
    if isinstance(videos, (list, tuple)) and not videos:
        raise DataError("no videos given: pass a video or a non-empty list of videos")
    if is_single_video(videos):
        return [videos], True
    return list(videos), False


def describe(video: Any, index: int, total: int) -> str:
    """How errors name a video of a batch."""
    if isinstance(video, (str, Path)):
        return str(video)
    return f"video {index}" if total > 1 else "video"


def frames_of(videos: Sequence[Any], num_frames: int | None, sampling: str | int) -> list[list[Image.Image]]:
    """:func:`load_video` over a batch, naming each video in errors."""
    return [load_video(v, num_frames, sampling, describe(v, i, len(videos))) for i, v in enumerate(videos)]
