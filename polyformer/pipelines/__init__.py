"""``pipeline(task, model=...)``: a model, its processor and post-processing behind one call,
returning Hugging Face's output formats."""

from __future__ import annotations

import importlib
from typing import Any, Callable

from polyformer.errors import ConfigError

# task name -> module that registers it (imported on first use)
TASK_MODULES: dict[str, str] = {
    "text-generation": "polyformer.pipelines.text_generation",
    "image-classification": "polyformer.pipelines.image_classification",
    "image-completion": "polyformer.pipelines.image_completion",
    "text-classification": "polyformer.pipelines.text_classification",
    "sentiment-analysis": "polyformer.pipelines.text_classification",
    "token-classification": "polyformer.pipelines.token_classification",
    "ner": "polyformer.pipelines.token_classification",
    "question-answering": "polyformer.pipelines.question_answering",
    "fill-mask": "polyformer.pipelines.fill_mask",
    "feature-extraction": "polyformer.pipelines.feature_extraction",
    "zero-shot-image-classification": "polyformer.pipelines.zero_shot_image_classification",
    "video-classification": "polyformer.pipelines.video_classification",
    "table-question-answering": "polyformer.pipelines.table_question_answering",
}

_FACTORIES: dict[str, Callable[..., Any]] = {}


def register_pipeline(task: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``factory(model, **kwargs)`` builds the pipeline object for ``task``."""

    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        _FACTORIES[task] = factory
        return factory

    return decorate


def supported_tasks() -> list[str]:
    """Every task name :func:`pipeline` accepts."""
    return sorted(set(TASK_MODULES) | set(_FACTORIES))


def pipeline(task: str, model: Any = None, **kwargs: Any) -> Any:
    """Build the pipeline for ``task`` around ``model`` (a folder path or a loaded model; None: the task's
    registered default model, see :mod:`polyformer.pipelines.defaults`)."""
    if task not in _FACTORIES and task in TASK_MODULES:
        importlib.import_module(TASK_MODULES[task])
    if task not in _FACTORIES:
        raise ConfigError(f"unknown task {task!r}; supported tasks: {', '.join(supported_tasks()) or '(none yet)'}")
    if model is None:
        from polyformer.pipelines.defaults import default_model

        model = default_model(task)  # the folder registered for the task, or a ConfigError saying how to make one
    return _FACTORIES[task](model, **kwargs)


__all__ = ["TASK_MODULES", "pipeline", "register_pipeline", "supported_tasks"]
