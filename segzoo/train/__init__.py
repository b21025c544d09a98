"""Training: the cross-entropy loss, optimizers, checkpoints, distributed set-up, and the trainer."""

from .config import TrainConfig
from .evaluate import evaluate
from .loss import cross_entropy
from .optim import OPTIMIZERS, make_optimizer, make_scheduler
from .records import EpochRecord, TrainResult
from .state import init_from_checkpoint, load_training_checkpoint
from .trainer import train

__all__ = [
    "OPTIMIZERS", "EpochRecord", "TrainConfig", "TrainResult", "cross_entropy", "evaluate", "init_from_checkpoint",
    "load_training_checkpoint", "make_optimizer", "make_scheduler", "train",
]
