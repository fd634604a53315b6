"""Stage II training: LoRA (and optionally the realigner) learned end to end through the latent trace."""

from diffmas.training.config import TrainConfig
from diffmas.training.objective import EVAL_METHOD, Batch, batch_loss, reference_target
from diffmas.training.trainer import DiffMASTrainer, NonFiniteLossError

__all__ = [
    "EVAL_METHOD",
    "Batch",
    "DiffMASTrainer",
    "NonFiniteLossError",
    "TrainConfig",
    "batch_loss",
    "reference_target",
]
