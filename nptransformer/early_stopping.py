"""Early stopping: stop training when a validation metric has stopped improving, and keep the
weights of the best evaluation.

A model trained long enough on few examples learns them by heart: the training loss keeps
falling while the validation loss, after a minimum, rises again. Early stopping evaluates every
so often and remembers the best value so far. An evaluation *improves* on it when it is lower by
more than ``min_delta`` (``mode="min"``, for a loss) or higher by more than ``min_delta``
(``mode="max"``, for an accuracy); after ``patience`` evaluations in a row without an
improvement it says stop. Used as::

    stopper = EarlyStopping(patience=3, mode="min")
    for step in range(1, steps + 1):
        ...                                              # one training step
        if step % eval_every == 0 and stopper.update(val_loss(model), step, model):
            break
    stopper.restore_best(model)                          # the weights of the best evaluation

Given the model, ``update`` copies its ``state_dict()`` at every improvement. The copy matters:
``state_dict()`` returns the parameters' own arrays, which the next optimizer step overwrites in
place.
"""
from __future__ import annotations

import math

MODES = ("min", "max")


class EarlyStopping:
    """Track the best value of a validation metric and say when to stop.

    ``patience``: how many evaluations in a row without an improvement end the training (a
    positive integer), or None to track the best value without ever saying stop. ``min_delta``: how much better than the best a value must be to count as
    an improvement (>= 0). ``mode``: ``"min"`` (a loss) or ``"max"`` (an accuracy).

    Attributes: ``best`` (None before the first evaluation), ``best_step``, ``bad_evals`` (the
    evaluations since the last improvement), ``should_stop``, ``best_state`` (a copy of the best
    model's ``state_dict()``, or None when no model was given) and ``history`` (every
    ``(step, value)``).
    """

    def __init__(self, patience: int = 5, min_delta: float = 0.0, mode: str = "min"):
        if patience is not None and (not isinstance(patience, int) or isinstance(patience, bool) or patience < 1):
            raise ValueError(f"EarlyStopping: patience must be a positive integer (evaluations without "
                             f"improvement) or None (never stop), got {patience!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or \
                not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"EarlyStopping: min_delta must be a finite number >= 0, got {min_delta!r}")
        if mode not in MODES:
            raise ValueError(f"EarlyStopping: mode must be one of {MODES}, got {mode!r}")
        self.patience, self.min_delta, self.mode = patience, float(min_delta), mode
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.should_stop = False
        self.best_state: dict | None = None
        self.history: list[tuple[int, float]] = []

    def is_improvement(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by more than ``min_delta`` (always, for the
        first value; never, for NaN)."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value, step: int | None = None, model=None) -> bool:
        """Record the metric ``value`` measured at training ``step`` (default: the number of
        evaluations so far, from 1). On an improvement, remember it and, when ``model`` is given,
        a copy of ``model.state_dict()``; otherwise count one more bad evaluation. Returns
        ``should_stop``: True once ``patience`` evaluations in a row did not improve.
        """
        try:
            if isinstance(value, (bool, str)):
                raise TypeError
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"EarlyStopping.update: value must be a number, got {value!r}") from None
        step = len(self.history) + 1 if step is None else step
        if not isinstance(step, int) or isinstance(step, bool):
            raise ValueError(f"EarlyStopping.update: step must be an integer, got {step!r}")
        self.history.append((step, value))
        if self.is_improvement(value):
            self.best, self.best_step, self.bad_evals = value, step, 0
            if model is not None:
                self.best_state = {name: array.copy() for name, array in model.state_dict().items()}
        else:
            self.bad_evals += 1
        self.should_stop = self.patience is not None and self.bad_evals >= self.patience
        return self.should_stop

    def restore_best(self, model) -> None:
        """Load the best evaluation's weights into ``model`` (``load_state_dict``, strict)."""
        if self.best_state is None:
            raise ValueError("EarlyStopping.restore_best: no weights were kept; pass the model to update() "
                             "so that it copies them at each improvement")
        model.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        """The counters, as plain JSON-ready values (for a checkpoint; the kept weights are not in it)."""
        return {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals,
                "should_stop": self.should_stop, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        """Restore the counters written by ``state_dict``."""
        missing = [k for k in ("best", "best_step", "bad_evals", "should_stop", "history") if k not in state]
        if missing:
            raise ValueError(f"EarlyStopping.load_state_dict: missing keys {missing}")
        self.best, self.best_step = state["best"], state["best_step"]
        self.bad_evals, self.should_stop = int(state["bad_evals"]), bool(state["should_stop"])
        self.history = [(int(s), float(v)) for s, v in state["history"]]

    def __repr__(self):
        return (f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, mode={self.mode!r}, "
                f"best={self.best}, best_step={self.best_step}, bad_evals={self.bad_evals})")
