"""EarlyStopping: best value and step, patience, min_delta, both modes, and a real copy of the
best weights that restore_best puts back after training has moved on."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nptransformer import functional as F
from nptransformer import nn, optim
from nptransformer.early_stopping import EarlyStopping


def test_tracks_the_best_value_and_stops_after_patience_bad_evaluations():
    stopper = EarlyStopping(patience=2)
    decisions = [stopper.update(v, step) for step, v in zip((10, 20, 30, 40, 50), (1.0, 0.8, 0.9, 0.85, 0.7))]
    assert decisions == [False, False, False, True, False]
    # Called again after saying stop, it goes on counting: 0.7 is a new best.
    assert (stopper.best, stopper.best_step, stopper.bad_evals, stopper.should_stop) == (0.7, 50, 0, False)
    assert stopper.history == [(10, 1.0), (20, 0.8), (30, 0.9), (40, 0.85), (50, 0.7)]


def test_an_improvement_resets_the_count():
    stopper = EarlyStopping(patience=3)
    for v in (1.0, 1.1, 1.2, 0.9, 1.0, 1.0):
        stopper.update(v)
    assert (stopper.best, stopper.best_step, stopper.bad_evals, stopper.should_stop) == (0.9, 4, 2, False)
    assert stopper.update(0.95) is True


def test_min_delta_and_mode_max():
    stopper = EarlyStopping(patience=1, min_delta=0.1)
    stopper.update(1.0)
    assert stopper.update(0.95) is True  # lower, but by less than min_delta: no improvement
    assert stopper.best == 1.0
    stopper = EarlyStopping(patience=2, mode="max")
    for acc in (0.5, 0.7, 0.6):
        stopper.update(acc)
    assert (stopper.best, stopper.best_step, stopper.bad_evals) == (0.7, 2, 1)
    assert stopper.update(0.7) is True  # equal is not better


def test_nan_is_never_an_improvement():
    stopper = EarlyStopping(patience=2)
    stopper.update(1.0)
    stopper.update(math.nan)
    assert stopper.best == 1.0 and stopper.bad_evals == 1
    first_nan = EarlyStopping(patience=1)
    assert first_nan.update(float("nan")) is True and first_nan.best is None


def test_keeps_a_copy_of_the_best_weights_and_restores_it():
    nn.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = optim.SGD(model.parameters(), lr=0.5)
    x, y = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32), np.arange(8) % 2
    stopper = EarlyStopping(patience=1)
    stopper.update(0.5, step=1, model=model)
    at_best = {k: v.copy() for k, v in model.state_dict().items()}
    for _ in range(3):  # training moves on; the optimizer writes into the parameters
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not np.allclose(model.weight.data, at_best["weight"])
    assert stopper.update(0.6, step=4, model=model) is True  # worse: nothing copied
    for name, array in stopper.best_state.items():
        assert np.array_equal(array, at_best[name])  # a copy, not the live arrays
    stopper.restore_best(model)
    for name, array in model.state_dict().items():
        assert np.array_equal(array, at_best[name])


def test_restore_best_without_kept_weights_says_why():
    stopper = EarlyStopping()
    stopper.update(1.0)
    with pytest.raises(ValueError, match="EarlyStopping.restore_best: no weights were kept; pass the model"):
        stopper.restore_best(nn.Linear(2, 2))


def test_state_dict_round_trips_through_json():
    stopper = EarlyStopping(patience=3, mode="max")
    for acc in (0.5, 0.7, 0.6):
        stopper.update(acc)
    again = EarlyStopping(patience=3, mode="max")
    again.load_state_dict(json.loads(json.dumps(stopper.state_dict())))
    assert again.state_dict() == stopper.state_dict()
    assert again.update(0.65) == stopper.update(0.65) is False
    assert again.update(0.6) == stopper.update(0.6) is True
    with pytest.raises(ValueError, match="EarlyStopping.load_state_dict: missing keys \\['history'\\]"):
        again.load_state_dict({"best": 1.0, "best_step": 1, "bad_evals": 0, "should_stop": False})


@pytest.mark.parametrize("kwargs, message", [
    ({"patience": 0}, "patience must be a positive integer"),
    ({"patience": 2.5}, "patience must be a positive integer"),
    ({"patience": True}, "patience must be a positive integer"),
    ({"min_delta": -0.1}, "min_delta must be a finite number >= 0"),
    ({"min_delta": float("inf")}, "min_delta must be a finite number >= 0"),
    ({"mode": "lowest"}, "mode must be one of \\('min', 'max'\\)"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match="EarlyStopping: " + message):
        EarlyStopping(**kwargs)


def test_update_checks_its_arguments():
    stopper = EarlyStopping()
    with pytest.raises(ValueError, match="EarlyStopping.update: value must be a number, got 'low'"):
        stopper.update("low")
    with pytest.raises(ValueError, match="EarlyStopping.update: step must be an integer, got 1.5"):
        stopper.update(1.0, step=1.5)
    assert stopper.update(np.float32(0.5)) is False  # NumPy scalars are numbers
    assert stopper.history == [(1, 0.5)]


def test_patience_none_tracks_the_best_and_never_stops():
    stopper = EarlyStopping(patience=None)
    for step, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], start=1):
        assert stopper.update(value, step) is False
    assert (stopper.best, stopper.best_step, stopper.bad_evals, stopper.should_stop) == (1.0, 1, 5, False)
