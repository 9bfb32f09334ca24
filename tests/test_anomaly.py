"""Anomaly mode: the first NaN or Inf, forward or backward, names the op that made it."""
import warnings

import numpy as np
import pytest

import nptransformer as nt
import nptransformer.functional as F
from nptransformer import autograd
from nptransformer.anomaly import AnomalyError, detect_anomaly


def test_forward_names_the_op_its_caller_and_that_it_made_the_value(xp):
    x = nt.Tensor(xp.asarray(np.array([[1.0, 0.0, 2.0], [3.0, 4.0, 0.0]])), requires_grad=True)
    y = x * 2.0  # finite: passes
    with pytest.raises(AnomalyError) as info, detect_anomaly():
        y.log()
    message = str(info.value)
    assert "forward of op 'log'" in message and "made -inf at index (0, 1)" in message
    assert "2 of 6 values non-finite" in message and "input shapes: (2, 3)" in message
    assert "every input was finite, so this op made it" in message
    assert f"{__file__}:" in message and "in test_forward_names_the_op" in message  # the line that called it
    assert "\n" not in message


def test_a_nan_that_comes_in_with_the_data_is_blamed_on_the_data():
    x = nt.Tensor(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(AnomalyError, match=r"op 'softmax' made nan .*input\(s\) \[0\] were already non-finite"):
        with detect_anomaly():
            F.softmax(x, axis=-1)


def test_backward_names_the_op_whose_gradient_went_non_finite_and_where_it_was_called(xp):
    x = nt.Tensor(xp.asarray(np.array([4.0, 0.0, 1.0])), requires_grad=True)
    with pytest.raises(AnomalyError) as info, detect_anomaly():
        y = x.sqrt()  # finite forward: sqrt(0) = 0; the gradient 1 / (2 sqrt(0)) is inf
        (y * 3.0).sum().backward()
    message = str(info.value)
    assert "backward of op 'sqrt' gave inf at index (1,)" in message
    assert "gradient of its argument 0 (shape (3,))" in message and "from a finite upstream gradient" in message
    assert f"{__file__}:" in message  # the forward line of the op, not the backward() call


def test_a_non_finite_seed_gradient_is_reported_as_such():
    x = nt.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x * 2.0
    with pytest.raises(AnomalyError, match="upstream gradient it received was already non-finite"):
        with detect_anomaly():
            y.backward(np.array([np.inf, 1.0]))


def test_finite_computations_pass_and_give_the_same_gradients():
    rng = np.random.default_rng(0)
    w = nt.Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    x = nt.Tensor(rng.standard_normal((5, 3)))

    def loss():
        w.grad = None
        F.cross_entropy(x @ w, np.array([0, 1, 2, 3, 0])).backward()
        return w.grad.copy()

    plain = loss()
    with detect_anomaly():
        checked = loss()
    np.testing.assert_array_equal(plain, checked)


def test_the_engine_is_left_clean_even_when_the_body_raises():
    assert autograd._observers == []
    with pytest.raises(AnomalyError):
        with detect_anomaly(), detect_anomaly():  # nesting is fine
            assert len(autograd._observers) == 2
            nt.Tensor(np.array([-1.0])).log()
    assert autograd._observers == []

    @detect_anomaly()
    def decorated():
        return len(autograd._observers)

    assert decorated() == 1 and autograd._observers == []


def test_numpy_warnings_are_replaced_by_the_anomaly_error_inside_and_restored_after():
    x = nt.Tensor(np.array([0.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would escape as an exception
        with pytest.raises(AnomalyError):
            with detect_anomaly():
                x.log()
    assert np.geterr()["divide"] == "warn"


def test_integer_and_boolean_results_are_not_checked():
    ids = nt.Tensor(np.array([1, 2, 3]))
    with detect_anomaly():
        mask = ids > 1
    assert mask.tolist() == [False, True, True]
