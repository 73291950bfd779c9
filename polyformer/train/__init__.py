"""Training: AdamW + warmup/cosine, checkpoints with exact resume, metrics, torchrun data parallelism."""

from polyformer.train.config import TrainConfig
from polyformer.train.models import ModelSpec, build_model, count_parameters
from polyformer.train.trainer import Trainer, TrainResult, seed_everything, train

__all__ = ["ModelSpec", "TrainConfig", "TrainResult", "Trainer", "build_model", "count_parameters",
           "seed_everything", "train"]
