"""gradcheck passes right backwards and explains wrong ones."""
import numpy as np
import pytest

import nptransformer as nt
from nptransformer import GradcheckError, gradcheck


def _fn(forward, backward):
    return type("Op", (nt.Function,), {"forward": staticmethod(forward), "backward": staticmethod(backward)}).apply


def _square(ctx, x):
    ctx.save_for_backward(x)
    return x * x


def test_passes_a_right_backward_and_leaves_inputs_untouched():
    x = nt.Tensor(np.random.default_rng(0).standard_normal((3, 2)), requires_grad=True)
    before = x.data.copy()
    assert gradcheck(_fn(_square, lambda ctx, d: 2 * ctx.saved[0] * d), [x])
    np.testing.assert_array_equal(x.data, before)
    assert x.grad is None


def test_float32_inputs_are_checked_in_float64():
    x = nt.Tensor(np.random.default_rng(1).standard_normal(5).astype(np.float32), requires_grad=True)
    seen = []

    def f(t):
        seen.append(t.dtype)
        return t.tanh()

    assert gradcheck(f, [x])
    assert set(seen) == {np.dtype(np.float64)}


def test_missing_factor_is_reported_with_index_values_and_hint():
    x = nt.Tensor(np.random.default_rng(2).standard_normal((2, 3)), requires_grad=True)
    with pytest.raises(GradcheckError) as err:
        gradcheck(_fn(_square, lambda ctx, d: ctx.saved[0] * d), [x])
    msg = str(err.value)
    assert "input 0 (shape (2, 3))" in msg and "6 of 6 elements" in msg
    assert "worst element: index (" in msg and "analytic" in msg and "numeric" in msg
    assert "times 0.5" in msg


def test_sign_and_zero_hints():
    x = nt.Tensor(np.random.default_rng(3).standard_normal(4), requires_grad=True)
    with pytest.raises(GradcheckError, match="sign flipped"):
        gradcheck(_fn(_square, lambda ctx, d: -2 * ctx.saved[0] * d), [x])
    with pytest.raises(GradcheckError, match="all zeros"):
        gradcheck(_fn(_square, lambda ctx, d: 0 * d), [x])


def test_transposed_hint():
    a = nt.Tensor(np.random.default_rng(4).standard_normal((3, 3)), requires_grad=True)

    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x @ x.T.copy() * 0 + x * np.arange(9.0).reshape(3, 3)

    with pytest.raises(GradcheckError, match="transpose"):
        gradcheck(_fn(forward, lambda ctx, d: (d * np.arange(9.0).reshape(3, 3)).T), [a])


def test_names_the_right_input_and_passes_integer_arguments_through():
    x = nt.Tensor(np.random.default_rng(5).standard_normal(3), requires_grad=True)
    y = nt.Tensor(np.random.default_rng(6).standard_normal(3), requires_grad=True)

    def forward(ctx, a, b, k):
        ctx.save_for_backward(a, b)
        return a * b * k

    def backward(ctx, d):
        a, b = ctx.saved
        return d * b * 2, d * a * 3  # input 1 is right (k = 3); input 0 should have 3, not 2
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(_fn(forward, backward), [x, y, 3])


def test_no_checked_input_is_a_clear_error():
    with pytest.raises(ValueError, match="none of the inputs is checked"):
        gradcheck(lambda t: t * 2, [nt.Tensor(np.ones(2))])
