"""The one training loop every experiment uses: the step of ``Trainer._train_step`` without a run
directory, for models trained and thrown away inside an experiment.

One step, in the order of nptransformer/train.py::

    loss = loss_fn(model, batch_fn(step))       # forward; the batch is a function of the step
    loss.backward()
    clip_grad_norm_(trainable parameters, clip_grad)
    optimizer.step(); schedule.step(); optimizer.zero_grad()

The optimizer is AdamW over the parameters that require gradients, so a frozen body
(``body.requires_grad_(False)``) is neither updated nor decayed; the schedule is a linear warm-up
then a cosine decay to 0 at the last step.
"""
from __future__ import annotations

import math

import numpy as np

from ..optim import AdamW, WarmupCosine, clip_grad_norm_
from ..train import TrainingError


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The generator for the batch of ``step``: a function of (seed, step) alone, as in the Trainer,
    so a run's batches do not depend on what was drawn before."""
    return np.random.default_rng((seed, step))


def fit(model, loss_fn, batch_fn, steps: int, lr: float, warmup: int = 0, weight_decay: float = 0.01,
        clip_grad: float = 1.0, on_step=None) -> list[float]:
    """Train ``model`` for ``steps`` steps and return the loss of each step.

    ``batch_fn(step)`` (step counts from 1) gives a batch, ``loss_fn(model, batch)`` a scalar
    Tensor. ``on_step(step, model)``, when given, runs after each complete step (the place for a
    validation curve or an ``EarlyStopping``; a truthy return value ends the training there).
    The model is in training mode (dropout on) during the loop and stays so after.
    Raises TrainingError on a non-finite loss or gradient norm, naming the step.
    """
    if steps < 1 or warmup < 0 or warmup > steps:
        raise ValueError(f"fit: need steps >= 1 and 0 <= warmup <= steps, got steps={steps}, warmup={warmup}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"fit: {type(model).__name__} has no parameter that requires gradients")
    optimizer = AdamW(params, lr=lr, weight_decay=weight_decay)
    schedule = WarmupCosine(optimizer, warmup, steps)
    model.train()
    losses = []
    for step in range(1, steps + 1):
        loss = loss_fn(model, batch_fn(step))
        value = float(loss.item())
        if not math.isfinite(value):
            raise TrainingError(f"fit: the loss is {value} at step {step} (lr {optimizer.param_groups[0]['lr']:.3g})")
        loss.backward()
        norm = clip_grad_norm_(params, clip_grad)
        if not math.isfinite(norm):
            raise TrainingError(f"fit: the gradient norm is {norm} at step {step} (loss {value:.4g})")
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(value)
        if on_step is not None and on_step(step, model):
            break
    return losses
