"""Training: one trainer for every model family — AdamW + warmup/cosine, checkpoints with exact
resume, metrics, torchrun data parallelism — with the family's task (next-token, next-pixel,
classification, masked-LM) supplying its batches and its loss."""

from polyformer.train.config import TrainConfig
from polyformer.train.examples import ExampleSet
from polyformer.train.models import FAMILIES, Family, ModelSpec, build_model, count_parameters, register_family
from polyformer.train.tasks import TASKS, make_task, register_task
from polyformer.train.trainer import Trainer, TrainResult, seed_everything, train

__all__ = ["FAMILIES", "TASKS", "ExampleSet", "Family", "ModelSpec", "TrainConfig", "TrainResult", "Trainer",
           "build_model", "count_parameters", "make_task", "register_family", "register_task", "seed_everything",
           "train"]
