"""The engine: graph walk, accumulation, dtypes, no_grad, freeing, and its errors."""
import weakref

import numpy as np
import pytest

import nptransformer as nt
from nptransformer.autograd import OpError, ShapeError

def test_tensor_basics():
    t = nt.Tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    assert t.shape == (2, 2) and t.ndim == 2 and t.dtype == np.float32
    assert t.grad is None and t.is_leaf
    assert isinstance(t.numpy(), np.ndarray)
    assert nt.Tensor(3.5).item() == 3.5
    d = t.detach()
    assert not d.requires_grad and d.data is t.data
    assert "requires_grad=True" in repr(t)

def test_dtype_rules():
    assert nt.Tensor([1.0]).dtype == np.float32  # Python floats -> float32
    assert nt.Tensor([1, 2]).dtype == np.int64
    assert nt.Tensor(np.ones(2)).dtype == np.float64  # an array keeps its dtype
    x = nt.Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    for y in (x * 0.5, 0.5 * x, x + 2, 2 - x, x / 3.0, 1.0 / x, x**2.0, 2.0**x, x.maximum(0.1)):
        assert y.dtype == np.float32  # a Python scalar never upcasts
    with pytest.raises(TypeError, match="floating-point"):
        nt.Tensor([1, 2], requires_grad=True)

def test_scalar_backward_seeds_one_and_nonscalar_needs_grad():
    x = nt.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data)
    y = x * 3.0
    with pytest.raises(RuntimeError, match="only a one-element tensor"):
        y.backward()
    x.grad = None
    (x * 3.0).backward(np.array([1.0, 0.0, 2.0]))
    np.testing.assert_allclose(x.grad, [3.0, 0.0, 6.0])

def test_diamond_graph_sums_both_paths():
    a = nt.Tensor(np.array(1.5), requires_grad=True)
    b = a * 2.0
    c = a.exp()
    (b * c).backward()  # d/da (2a e^a) = 2 e^a + 2a e^a
    np.testing.assert_allclose(a.grad, 2 * np.exp(1.5) + 3 * np.exp(1.5))

@pytest.mark.parametrize("first", [True, False])
def test_diamond_in_either_input_order(first):
    """x - max(x): x feeds the output directly and through max; both paths must arrive before
    x is processed, whichever order the inputs are pushed in."""
    x = nt.Tensor(np.array([1.0, 3.0, 2.0]), requires_grad=True)
    m = x.max(axis=0, keepdims=True)
    y = x - m if first else -(m - x)
    y.backward(np.ones(3))
    np.testing.assert_allclose(x.grad, [1.0, -2.0, 1.0])

def test_tensor_used_twice_in_one_op():
    a = nt.Tensor(np.array([2.0, -1.0]), requires_grad=True)
    (a * a).sum().backward()
    np.testing.assert_allclose(a.grad, [4.0, -2.0])
    (a + a).sum().backward()  # accumulates onto the previous .grad
    np.testing.assert_allclose(a.grad, [6.0, 0.0])

def test_leaf_gradients_do_not_alias():
    a = nt.Tensor(np.zeros(3), requires_grad=True)
    b = nt.Tensor(np.zeros(3), requires_grad=True)
    (a + b).sum().backward()  # Add hands the same dout to both inputs
    a.grad += 1.0
    np.testing.assert_allclose(b.grad, np.ones(3))

def test_chain_of_100000_ops_has_no_recursion_limit():
    x = nt.Tensor(np.array(1.0), requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0001
    y.backward()
    np.testing.assert_allclose(x.grad, 1.0001**100_000, rtol=1e-9)

def test_no_grad_records_nothing_as_context_and_decorator():
    x = nt.Tensor(np.ones(2), requires_grad=True)
    with nt.no_grad():
        y = (x * 2).exp()
        assert not nt.is_grad_enabled()
    assert nt.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    @nt.no_grad()
    def f(t):
        return t * t
    z = f(x)
    assert not z.requires_grad and z.grad_fn is None
    assert nt.is_grad_enabled()

def test_no_grad_restores_on_exception():
    with pytest.raises(ZeroDivisionError):
        with nt.no_grad():
            1 / 0
    assert nt.is_grad_enabled()

def test_graph_freed_after_backward_and_retain_graph():
    x = nt.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, 4 * x.data)
    with pytest.raises(RuntimeError, match="already walked"):
        y.backward()

def test_intermediate_grad_is_released_unless_retained():
    x = nt.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3.0
    k = (x * 2.0).retain_grad()
    (h * k).sum().backward()
    assert h.grad is None
    np.testing.assert_allclose(k.grad, h.data)

def test_graph_holds_nodes_not_the_tensors_between_ops():
    x = nt.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3.0
    y = (h + x).sum()
    add = y.grad_fn.inputs[0]
    assert y.grad_fn.fn.op_name() == "sum" and add.fn.op_name() == "add"
    assert add.inputs == (h.grad_fn, x) and add.inputs[1] is x  # a leaf is its own node
    assert add.output_shape == (2,) and add.output_dtype == np.float64
    order = nt.autograd.topological_order(y)
    assert order[0] is y.grad_fn and order[-1] is x and h.grad_fn in order
    assert repr(add) == "<add node: output (2,) float64>"
    alive = weakref.ref(h)
    del h  # only the addition used it, and addition saves nothing: nothing keeps it now
    assert alive() is None
    y.backward()
    np.testing.assert_allclose(x.grad, [4.0, 4.0])
    assert repr(add) == "<add node, released by a backward>" and not hasattr(add, "inputs")

def test_saved_arrays_are_freed_by_the_backward():
    x = nt.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = (x * 3.0).exp()  # exp saves its output array
    saved = weakref.ref(h.grad_fn.saved[0])
    y = h.sum()
    del h
    assert saved() is not None
    y.backward()
    assert saved() is None

def test_retain_grad_on_a_dropped_tensor_is_harmless():
    x = nt.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    k = (x * 2.0).retain_grad()
    y = (k * k).sum()
    del k
    y.backward()
    np.testing.assert_allclose(x.grad, 8 * x.data)

def test_function_subclass_and_wrong_gradient_shape_error():
    class Double(nt.Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x
        @staticmethod
        def backward(ctx, dout):
            return dout.sum(axis=0)  # wrong shape on purpose
    x = nt.Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ShapeError, match="double.backward returned a gradient of shape"):
        Double.apply(x).sum().backward()

def test_backward_broadcasting_undone_once_in_the_engine():
    x = nt.Tensor(np.ones((4, 3)), requires_grad=True)
    b = nt.Tensor(np.ones((1, 3)), requires_grad=True)
    c = nt.Tensor(np.ones(3), requires_grad=True)
    (x * b + c).sum().backward()
    assert b.grad.shape == (1, 3) and c.grad.shape == (3,)
    np.testing.assert_allclose(c.grad, [4.0, 4.0, 4.0])

def test_shape_errors_are_readable():
    with pytest.raises(ShapeError) as err:
        nt.Tensor(np.ones((3, 4))) @ nt.Tensor(np.ones((5, 6)))
    msg = str(err.value)
    assert "matmul" in msg and "(3, 4)" in msg and "(5, 6)" in msg
    with pytest.raises(OpError, match=r"add: .*\(3, 4\), \(5, 6\)"):
        nt.Tensor(np.ones((3, 4))) + nt.Tensor(np.ones((5, 6)))
    with pytest.raises(OpError, match="reshape"):
        nt.Tensor(np.ones(12)).reshape(5, 3)
    with pytest.raises(ShapeError, match="concatenate"):
        nt.concatenate([nt.Tensor(np.ones((2, 3))), nt.Tensor(np.ones((2, 4)))], axis=0)
    with pytest.raises(ShapeError, match="squeeze"):
        nt.Tensor(np.ones((2, 3))).squeeze(0)

def test_shape_error_has_no_numpy_traceback_chain():
    try:
        nt.Tensor(np.ones((3, 4))) + nt.Tensor(np.ones((5, 6)))
    except OpError as exc:
        assert exc.__cause__ is None and exc.__suppress_context__
    else:
        pytest.fail("no error")

def test_comparisons_make_masks_without_gradient():
    x = nt.Tensor(np.array([-1.0, 0.5, 2.0]), requires_grad=True)
    m = x > 0
    assert m.dtype == bool and not m.requires_grad
    np.testing.assert_array_equal(m.data, [False, True, True])
    y = x.masked_fill(m, 0.0).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, [1.0, 0.0, 0.0])
