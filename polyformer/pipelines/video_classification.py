"""``pipeline("video-classification", model=FOLDER)``: videos in, ``[{"label", "score"}]`` out.

The call and output follow ``transformers``' video-classification pipeline: ``top_k`` (default 5),
``num_frames`` (default: the model's ``config.num_frames``), ``frame_sampling_rate`` and
``function_to_apply``; one video gives a list of ``top_k`` classes sorted by score, a list of
videos one such list per video. A video is anything :func:`~polyformer.processors.video.load_video`
reads: frames in memory, a folder of frames, a GIF / APNG, or a video file when PyAV is installed
(``transformers`` reads only files, and only through PyAV).

Which frames: with ``frame_sampling_rate=k`` the frames ``transformers`` picks (``num_frames``
from the start, about every k-th); without it, ``num_frames`` spread evenly over the whole clip.
The second is our default because ``transformers``' default (rate 1: the first ``num_frames``
frames) classifies a few tenths of a second of a long video; pass ``frame_sampling_rate=1`` to get
its frames and scores exactly.

    classifier = pipeline("video-classification", model="my-timesformer")
    classifier("clip.gif", top_k=3)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from polyformer.errors import ConfigError
from polyformer.pipelines import register_pipeline
from polyformer.pipelines.image_classification import ImageClassificationPipeline, _check_top_k
from polyformer.processors.video import VideoProcessor
from polyformer.processors.video_inputs import as_video_batch, frames_of

__all__ = ["VideoClassificationPipeline", "load_video_model"]


def load_video_model(model: Any, processor: VideoProcessor | None) -> tuple[nn.Module, VideoProcessor]:
    """A model (loaded from a folder if a path is given) and the video processor saved with it."""
    from pathlib import Path

    if isinstance(model, (str, Path)):
        from polyformer.models import from_pretrained

        return from_pretrained(Path(model)).eval(), processor or VideoProcessor.from_pretrained(model)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"pipeline('video-classification'): model must be a model folder or a loaded model, got "
                          f"{type(model).__name__}")
    if processor is None:
        raise ConfigError(
            f"pipeline('video-classification') with a loaded {type(model).__name__} needs processor=<its video "
            "processor>, e.g. VideoProcessor.from_pretrained(folder); save it beside the model with "
            "processor.save_pretrained(folder) so the folder alone is enough"
        )
    return model.eval(), processor


class VideoClassificationPipeline(ImageClassificationPipeline):
    """A video classifier, its processor and ``transformers``' post-processing behind one call."""

    def __init__(self, model: nn.Module, processor: VideoProcessor, *, top_k: int = 5, num_frames: int | None = None,
                 frame_sampling_rate: int | None = None, function_to_apply: str | None = None,
                 batch_size: int = 4) -> None:
        super().__init__(model, processor, top_k=top_k, function_to_apply=function_to_apply, batch_size=batch_size)
        self.num_frames = num_frames
        self.frame_sampling_rate = frame_sampling_rate

    def _frames(self, num_frames: int | None) -> int:
        n = num_frames if num_frames is not None else self.num_frames
        if n is None:
            n = getattr(self.model.config, "num_frames", None)
        if n is None:
            raise ConfigError("the model's config has no num_frames; pass num_frames=")
        return n

    @torch.no_grad()
    def video_logits(self, videos: list[Any], num_frames: int, sampling: str | int) -> np.ndarray:
        """(len(videos), num_labels) float32 logits, ``batch_size`` videos at a time."""
        rows = []
        for start in range(0, len(videos), self.batch_size):
            clips = frames_of(videos[start:start + self.batch_size], num_frames, sampling)
            inputs = self.processor(clips, return_tensors="pt")
            rows.append(self.model(**inputs).logits.float().cpu().numpy())
        return np.concatenate(rows)

    def __call__(self, videos: Any, top_k: int | None = None, num_frames: int | None = None,  # type: ignore[override]
                 frame_sampling_rate: int | None = None, function_to_apply: str | None = None) -> list:
        """Top classes per video: ``[{"label", "score"}]`` for one video, a list of those for several."""
        batch, single = as_video_batch(videos)
        k = min(_check_top_k(top_k if top_k is not None else self.top_k), len(self.id2label))
        rate = frame_sampling_rate if frame_sampling_rate is not None else self.frame_sampling_rate
        logits = self.video_logits(batch, self._frames(num_frames), "uniform" if rate is None else rate)
        function = self._function(function_to_apply)
        results = [self._postprocess(row, k, function) for row in logits]
        return results[0] if single else results


@register_pipeline("video-classification")
def build_video_classification(model: Any, processor: VideoProcessor | None = None,
                               **kwargs: Any) -> VideoClassificationPipeline:
    """``pipeline("video-classification", model=FOLDER or model, processor=None, top_k=5, num_frames=None,
    frame_sampling_rate=None, batch_size=4)``."""
    model, processor = load_video_model(model, processor)
    return VideoClassificationPipeline(model, processor, **kwargs)
