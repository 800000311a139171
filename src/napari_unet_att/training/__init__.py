"""Self-supervised training: patch pairs from a stack, the Trainer, pretraining and step timing.

The data flows: ``start`` (model, optimiser, samplers from the resolved config) or ``resume``
(an interrupted run's state), then the ``trainer`` loop (``loss``, ``schedule``), with
``saving`` writing the checkpoints; ``sampler`` draws the patches, ``pretraining`` makes the
generalist models and ``timing`` says what a budget buys.
"""

from .loss import loss_fn
from .pretraining import pretrain
from .sampler import PatchSampler, Prefetcher
from .saving import FINAL_NAME, LAST_NAME
from .schedule import Budget, lr_factor
from .timing import describe_budget, measure_step_seconds
from .trainer import Trainer, iter_train, train

__all__ = [
    "FINAL_NAME", "LAST_NAME", "Budget", "PatchSampler", "Prefetcher", "Trainer", "describe_budget", "iter_train",
    "loss_fn", "lr_factor", "measure_step_seconds", "pretrain", "train",
]
