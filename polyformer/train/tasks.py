"""What a model is trained to do: the batches it is fed and the loss it is scored with.

A *task* is the one thing that differs between training a GPT, a ViT and a BERT on the shared
trainer. It supplies

* ``sampler(data, config, rank, world_size)`` — an object whose ``batch(step, micro)`` is this
  process's micro-batch of optimiser step ``step`` (a pure function of seed and step, so that a
  resumed run draws the same batches);
* ``eval_batches(data, config, rank, world_size)`` — this process's share of the fixed
  validation batches (the same at every evaluation);
* ``loss(model, batch)`` — the scalar training loss; it must call ``model(...)`` (the forward), so
  that data-parallel training sees the call and synchronises gradients;
* ``eval_sums(model, batch)`` — sums over the batch (``loss`` summed, ``count``, any extras such
  as ``correct``); the trainer adds them over batches and processes and divides by ``count``;
* ``tokens_per_example(data, config)`` — what one example counts as in ``tokens`` (None: the
  model family says).

Registered tasks (one :func:`register_task` each):

* ``next-token`` — random windows of a token stream; the model's own shifted loss
  (``model(input_ids, labels=input_ids)``). GPT, any causal LM.
* ``next-pixel`` — whole images as palette tokens: the start token and all but the last pixel
  in, every pixel predicted. iGPT.
* ``classification`` — examples and integer labels; cross-entropy of ``logits``; evaluation
  reports accuracy too. ViT, any ``*ForSequenceClassification``.
* ``masked-lm`` — windows of a token stream, 15% chosen and 80/10/10 corrupted
  (:mod:`polyformer.train.masking`); cross-entropy of ``logits`` at the chosen positions. BERT.
* ``model-loss`` — examples whose inputs carry all the supervision; the model's own ``loss``.
  TAPAS (cell labels, aggregation labels, numeric values).
* ``contrastive`` — image-text pairs (``pixel_values``, ``input_ids``, ``attention_mask``);
  CLIP's symmetric cross-entropy of ``logits_per_image`` against ``arange(B)``, with the learnt
  temperature clamped after every step as Radford et al. do. CLIP.

A task may also define ``after_step(model)``, which the trainer calls after every optimiser step
(the contrastive task clamps the logit scale there).

Adding a task (CTC for wav2vec 2.0, say) is one class with these five methods and one
``register_task("ctc")`` — the trainer, checkpoints, DDP and sweeps are unchanged. A CTC task's
examples would carry ``input_values`` and padded ``labels`` with their lengths, and its loss
``F.ctc_loss`` of the model's log-probabilities.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyformer.errors import ConfigError, DataError
from polyformer.train.batches import WindowSampler, eval_windows, read_windows
from polyformer.train.config import TrainConfig
from polyformer.train.examples import ExampleSampler, ExampleSet, eval_examples, example_batches
from polyformer.train.masking import IGNORE_INDEX, mask_tokens


class BatchSource(Protocol):
    """What a task's ``sampler`` returns."""

    def batch(self, step: int, micro: int) -> dict[str, Tensor]: ...


class Task(Protocol):
    """The protocol every training task follows (see the module docstring)."""

    name: str

    def sampler(self, data: Any, config: TrainConfig, rank: int, world_size: int) -> BatchSource: ...

    def eval_batches(self, data: Any, config: TrainConfig, rank: int, world_size: int) -> Iterator[dict[str, Tensor]]: ...

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor: ...

    def eval_sums(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]: ...

    def tokens_per_example(self, data: Any, config: TrainConfig) -> int | None: ...


TaskFactory = Callable[..., Task]
TASKS: dict[str, TaskFactory] = {}


def register_task(name: str) -> Callable[[TaskFactory], TaskFactory]:
    """Class decorator: make a task available under ``name`` (its constructor takes the options)."""

    def add(factory: TaskFactory) -> TaskFactory:
        TASKS[name] = factory
        return factory

    return add


def make_task(name: str, options: dict[str, Any] | None = None, vocab_size: int | None = None) -> Task:
    """The task ``name`` with its options (``vocab_size``: the data's, for tasks that need it)."""
    if name not in TASKS:
        raise ConfigError(f"unknown training task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    try:
        return TASKS[name](vocab_size=vocab_size, **dict(options or {}))
    except TypeError as error:
        raise ConfigError(f"options of task {name!r}: {error}") from None


# ------------------------------------------------------------------------------------------------
# Tasks on a token stream
# ------------------------------------------------------------------------------------------------
class _TokenStreamTask:
    """Random windows of ``seq_len`` tokens for training, evenly spread fixed windows for evaluation."""

    name = ""

    def _check(self, data: Any) -> np.ndarray:
        if isinstance(data, ExampleSet) or not hasattr(data, "__len__"):
            raise DataError(f"task {self.name!r} trains on a token stream (an array of token ids), "
                            f"got {type(data).__name__}")
        return data

    def sampler(self, data: Any, config: TrainConfig, rank: int, world_size: int) -> BatchSource:
        return WindowSampler(self._check(data), config.seq_len, config.batch_size, config.grad_accum, config.seed,
                             rank, world_size)

    def eval_batches(self, data: Any, config: TrainConfig, rank: int, world_size: int) -> Iterator[dict[str, Tensor]]:
        tokens = self._check(data)
        mine = eval_windows(len(tokens), config.seq_len, config.eval_tokens)[rank::world_size]
        for first in range(0, len(mine), config.batch_size):
            ids = read_windows(tokens, mine[first : first + config.batch_size], config.seq_len)
            yield {"input_ids": ids, "labels": ids}

    def tokens_per_example(self, data: Any, config: TrainConfig) -> int | None:
        return config.seq_len


@register_task("next-token")
class NextTokenTask(_TokenStreamTask):
    """Causal language modelling: the model shifts the labels itself (position t predicts t + 1)."""

    name = "next-token"

    def __init__(self, vocab_size: int | None = None) -> None:
        del vocab_size  # the model owns its vocabulary

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        # The model's own loss: GPT computes it in chunks without forming (B, T, V) logits.
        return model(input_ids=batch["input_ids"], labels=batch["labels"]).loss

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        count = len(batch["input_ids"])
        return {"loss": float(self.loss(model, batch)) * count, "count": count}


class _MaskedSampler:
    """Windows of a token stream, corrupted for masked-LM with a generator keyed by (seed, step, first)."""

    def __init__(self, windows: WindowSampler, task: "MaskedLMTask") -> None:
        self.windows, self.task = windows, task

    def batch(self, step: int, micro: int) -> dict[str, Tensor]:
        ids = self.windows.batch(step, micro)["input_ids"]
        first = (micro * self.windows.world_size + self.windows.rank) * self.windows.batch_size
        return self.task.corrupt(ids, np.random.default_rng([self.windows.seed, step, first]))


@register_task("masked-lm")
class MaskedLMTask(_TokenStreamTask):
    """BERT's masked language modelling on windows of a token stream.

    Options: ``mask_token_id`` (required: the tokenizer's ``[MASK]``), ``probability`` (0.15),
    ``special_ids`` never chosen. The loss is the cross-entropy of the model's ``logits`` over
    the chosen positions only (labels -100 elsewhere), as Hugging Face computes it.
    """

    name = "masked-lm"
    EVAL_KEY = 7_777_777  # keys the evaluation masks apart from every training step's

    def __init__(self, vocab_size: int | None = None, mask_token_id: int | None = None, probability: float = 0.15,
                 special_ids: tuple[int, ...] | list[int] = ()) -> None:
        if mask_token_id is None:
            raise ConfigError("the masked-lm task needs mask_token_id (the tokenizer's [MASK] id); give it in "
                              "the model spec's task_options")
        if vocab_size is None:
            raise ConfigError("the masked-lm task needs the vocabulary size (random replacements are drawn from it)")
        self.vocab_size, self.mask_token_id = int(vocab_size), int(mask_token_id)
        self.probability, self.special_ids = float(probability), tuple(int(i) for i in special_ids)
        mask_tokens(torch.zeros(1, 1, dtype=torch.long), np.random.default_rng(0), self.vocab_size,
                    self.mask_token_id, self.probability)  # bad options fail now, not at step 1

    def corrupt(self, ids: Tensor, generator: np.random.Generator) -> dict[str, Tensor]:
        """The masked batch: ``input_ids`` (corrupted) and ``labels`` (-100 where not chosen)."""
        inputs, labels = mask_tokens(ids, generator, self.vocab_size, self.mask_token_id, self.probability,
                                     self.special_ids)
        return {"input_ids": inputs, "labels": labels}

    def sampler(self, data: Any, config: TrainConfig, rank: int, world_size: int) -> BatchSource:
        return _MaskedSampler(super().sampler(data, config, rank, world_size), self)

    def eval_batches(self, data: Any, config: TrainConfig, rank: int, world_size: int) -> Iterator[dict[str, Tensor]]:
        for index, batch in enumerate(super().eval_batches(data, config, rank, world_size)):
            yield self.corrupt(batch["input_ids"], np.random.default_rng([config.seed, self.EVAL_KEY, rank, index]))

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        logits = model(input_ids=batch["input_ids"]).logits  # (B, T, V)
        labels = batch["labels"]
        if not bool((labels != IGNORE_INDEX).any()):
            # no position was chosen in this batch (tiny batches): a zero that still has a graph
            return logits.sum() * 0.0
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                               ignore_index=IGNORE_INDEX)

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        count = int((batch["labels"] != IGNORE_INDEX).sum())
        return {"loss": float(self.loss(model, batch)) * count, "count": count}


# ------------------------------------------------------------------------------------------------
# Tasks on fixed-size examples
# ------------------------------------------------------------------------------------------------
class _ExampleTask:
    """Examples drawn epoch by epoch for training; evenly spread fixed examples for evaluation.

    The number of evaluation examples is ``eval_tokens / tokens_per_example`` (every example when
    that is more than there are).
    """

    name = ""

    def _check(self, data: Any) -> ExampleSet:
        if not isinstance(data, ExampleSet):
            raise DataError(f"task {self.name!r} trains on examples (an ExampleSet of inputs and labels), "
                            f"got {type(data).__name__}")
        return data

    def sampler(self, data: Any, config: TrainConfig, rank: int, world_size: int) -> BatchSource:
        return ExampleSampler(self._check(data), config.batch_size, config.grad_accum, config.seed, rank, world_size)

    def eval_batches(self, data: Any, config: TrainConfig, rank: int, world_size: int) -> Iterator[dict[str, Tensor]]:
        examples = self._check(data)
        per_example = self.tokens_per_example(examples, config) or 1
        mine = eval_examples(len(examples), config.eval_tokens // per_example)[rank::world_size]
        return example_batches(examples, mine, config.batch_size)

    def tokens_per_example(self, data: Any, config: TrainConfig) -> int | None:
        return getattr(data, "tokens_per_example", None)


def _model_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in batch.items() if k != "labels"}


@register_task("classification")
class ClassificationTask(_ExampleTask):
    """One integer label per example; the loss is the cross-entropy of the model's ``logits`` (B, C)."""

    name = "classification"

    def __init__(self, vocab_size: int | None = None) -> None:
        del vocab_size

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        logits = model(**_model_inputs(batch)).logits  # (B, C)
        return F.cross_entropy(logits.float(), batch["labels"].long())

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        logits = model(**_model_inputs(batch)).logits.float()
        labels = batch["labels"].long()
        loss = F.cross_entropy(logits, labels, reduction="sum")
        return {"loss": float(loss), "count": len(labels), "correct": int((logits.argmax(-1) == labels).sum())}


@register_task("next-pixel")
class NextPixelTask(_ExampleTask):
    """Next-token prediction over whole images (iGPT): ``labels`` are the N pixels, the input is the
    start token and the first N - 1 pixels, and every pixel is predicted (so N positions suffice)."""

    name = "next-pixel"

    def __init__(self, vocab_size: int | None = None) -> None:
        del vocab_size

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        logits = model(input_ids=batch["input_ids"]).logits  # (B, N, palette)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch["labels"].reshape(-1).long())

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        count = len(batch["labels"])
        return {"loss": float(self.loss(model, batch)) * count, "count": count}


@register_task("contrastive")
class ContrastiveTask(_ExampleTask):
    """Image-text pairs; the loss is CLIP's symmetric cross-entropy over the batch.

    Examples carry the model inputs ``pixel_values``, ``input_ids`` and ``attention_mask`` (one
    caption per image; the i-th caption belongs to the i-th image) and ``labels``, a class per
    pair used only to score evaluation: an image counts as ``correct`` when the caption it scores
    highest in its batch has its class (captions of other images of the same class are as good).

    The loss is the model's own (``return_loss=True``), the mean of the image-to-text and
    text-to-image cross-entropies against ``arange(B)``. The temperature is learnt as
    ``logit_scale`` (logits are ``exp(logit_scale) * cosine``); after every optimiser step it is
    clamped to ``[0, ln max_scale]`` — Radford et al. clip it "to prevent scaling the logits by
    more than 100", and open_clip clamps the parameter in place after each step, which is what
    :meth:`after_step` does (a model without ``logit_scale`` is left alone).
    """

    name = "contrastive"

    def __init__(self, vocab_size: int | None = None, max_scale: float = 100.0) -> None:
        del vocab_size
        if not (isinstance(max_scale, (int, float)) and max_scale >= 1.0):
            raise ConfigError(f"the contrastive task's max_scale must be a number >= 1 (the largest factor on the "
                              f"cosine similarities), got {max_scale!r}")
        self.max_log_scale = math.log(float(max_scale))

    def _outputs(self, model: nn.Module, batch: dict[str, Tensor]) -> Any:
        if "pixel_values" not in batch or "input_ids" not in batch:
            raise DataError(f"the contrastive task pairs images and texts: each example needs pixel_values and "
                            f"input_ids, got {sorted(batch)}")
        return model(**_model_inputs(batch), return_loss=True)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return self._outputs(model, batch).loss

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        out = self._outputs(model, batch)
        labels = batch["labels"].long()
        chosen = labels[out.logits_per_image.argmax(dim=1)]  # the class of each image's best caption
        count = len(labels)
        return {"loss": float(out.loss) * count, "count": count, "correct": int((chosen == labels).sum())}

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        """Clamp the model's ``logit_scale`` to ``[0, ln max_scale]`` (a scale between 1 and max_scale)."""
        scale = getattr(getattr(model, "module", model), "logit_scale", None)  # DDP wraps the model
        if isinstance(scale, Tensor):
            scale.clamp_(0.0, self.max_log_scale)


@register_task("model-loss")
class ModelLossTask(_ExampleTask):
    """Examples whose model computes its own loss: every input, with ``labels``, goes to the forward and
    the output's ``loss`` is the training loss. For heads whose loss needs more than the logits and one
    label per example — TAPAS's cell selection and aggregation read per-token ``labels``, the
    ``aggregation_labels`` and the table's numeric values, which travel as inputs. Evaluation
    reports the mean loss (a task-specific score, such as denotation accuracy, is the recipe's)."""

    name = "model-loss"

    def __init__(self, vocab_size: int | None = None) -> None:
        del vocab_size

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        loss = model(**batch).loss
        if loss is None:
            raise DataError(f"task 'model-loss': the model returned no loss for inputs {sorted(batch)}; give "
                            "the supervision its forward needs to compute one (labels, ...)")
        return loss

    @torch.no_grad()
    def eval_sums(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        count = len(batch["labels"])
        return {"loss": float(self.loss(model, batch)) * count, "count": count}


def finish_sums(sums: dict[str, float]) -> dict[str, float]:
    """Evaluation metrics from summed ``eval_sums``: ``val_loss`` and, when counted, ``val_accuracy``."""
    count = sums.get("count", 0.0)
    if count <= 0:
        raise DataError("the evaluation saw no examples (or no masked positions); give more validation data")
    out = {"val_loss": sums["loss"] / count}
    if "correct" in sums:
        out["val_accuracy"] = sums["correct"] / count
    return out
