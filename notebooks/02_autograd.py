# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 · Autograd from scratch
#
# *Source: §3.3 "Forward and backward propagation": the computation graph of the forward pass
# (3.3.1), back-propagation and gradient computation (3.3.2), parameter updates (3.3.3).*
#
# ## What you will learn
#
# - How every operation on a `Tensor` records itself, so that the forward pass leaves behind a
#   **computation graph**, and how to draw that graph.
# - Why the backward pass needs a **topological order**, and how the engine finds one.
# - **Backward** as the chain rule applied once per node, from the loss back to the leaves,
#   with gradients **adding up** where a tensor is used twice.
# - How to write your own op: a `Function` with `forward` and `backward` side by side.
# - **gradcheck**: testing a backward against finite differences, and why in float64.
# - A **parameter update**: one step of gradient descent, repeated.

# %%
import inspect

import matplotlib.pyplot as plt
import numpy as np

import nptransformer as nt
from nptransformer import Function, Tensor, gradcheck
from nptransformer.autograd import _topological_order
from nptransformer.exercises import check
from nptransformer.functional import primitives

# %% [markdown]
# ## The forward pass records a graph
#
# A small function: a neuron $y = \tanh(w \cdot x + b)$ and a squared error against the target 1,
# $L = (y - 1)^2$. Each operation returns a new `Tensor`; when an input requires a gradient, the
# result also remembers *how it was made*: `t._ctx.fn` is the op (a `Function` class) and
# `t._ctx.inputs` the tensors it was made from. (We use float64 arrays here; a float64 array keeps
# its dtype, which is what gradcheck will want later.)

# %%
x = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
w = Tensor(np.array([1.5, 0.3, -0.7]), requires_grad=True)
b = Tensor(np.array(0.2), requires_grad=True)

s = (x * w).sum() + b
y = s.tanh()
loss = (y - 1.0) ** 2

print("loss =", loss.item())
print("loss was made by", loss._ctx.fn.__name__, "from", loss._ctx.inputs)
print("y    was made by", y._ctx.fn.__name__, "from a tensor of shape", y._ctx.inputs[0].shape)
print("x is a leaf:", x.is_leaf, "| loss is a leaf:", loss.is_leaf)

# %% [markdown]
# Following `_ctx.inputs` from the loss backwards reaches every tensor that contributed to it.
# Drawing them shows the graph that §3.3.1 talks about: boxes are tensors, circles are the ops
# that made them, arrows point the way the forward pass ran. (A Python number such as the `1.0`
# becomes a constant array, not a tensor: it has no box and gets no gradient.)


# %%
def draw_graph(root, names):
    """Tensors as boxes and ops as circles, found by walking `_ctx.inputs` back from `root`."""
    order = _topological_order(root)  # every tensor that needs a gradient, outputs first
    depth = {id(root): 0}  # columns counted back from the output
    for t in order:
        for p in (t._ctx.inputs if t._ctx else ()):
            if p is not None and p.requires_grad:
                depth[id(p)] = max(depth.get(id(p), 0), depth[id(t)] + 1)
    rows, pos = {}, {}
    for t in order:
        col = depth[id(t)]
        pos[id(t)] = (-3.0 * col, -rows.get(col, 0))
        rows[col] = rows.get(col, 0) + 1
    fig, ax = plt.subplots(figsize=(2.4 * (max(depth.values()) + 1), 1.2 * max(rows.values()) + 1.2))
    for t in order:
        tx, ty = pos[id(t)]
        label = names.get(id(t), f"shape {t.shape}")
        value = f"\n{t.item():.3f}" if t.size == 1 else ""
        ax.text(tx, ty, label + value, ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round", fc="lightyellow" if t.is_leaf else "white", ec="gray"))
        if t._ctx is None:
            continue
        ox = tx - 1.5  # the op that made t sits between it and its inputs
        ax.text(ox, ty, t._ctx.fn.op_name(), ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="circle", fc="lightblue", ec="steelblue"))
        ax.annotate("", (tx - 0.45, ty), (ox + 0.3, ty), arrowprops=dict(arrowstyle="->"))
        drawn = []
        for p in t._ctx.inputs:
            if p is None or id(p) not in pos:
                continue
            far = depth[id(p)] - depth[id(t)] > 1  # skips a column: bend around what is in between
            rad = 0.4 * far + 0.9 * drawn.count(id(p))  # a second use of the same tensor: another arc
            drawn.append(id(p))
            ax.annotate("", (ox - 0.3, ty), (pos[id(p)][0] + 0.45, pos[id(p)][1]),
                        arrowprops=dict(arrowstyle="->", color="gray", connectionstyle=f"arc3,rad={-rad}"))
    xs, ys = zip(*pos.values())
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.8, 0.8)
    ax.axis("off")
    plt.show()


names = {id(x): "x", id(w): "w", id(b): "b", id(s): "s = w·x + b", id(y): "y = tanh(s)", id(loss): "L"}
draw_graph(loss, names)

# %% [markdown]
# ## Backward: the chain rule, node by node
#
# Every op knows its *local* derivative: given $\partial L / \partial\,\text{output}$ (called
# `dout`) its `backward` returns $\partial L / \partial\,\text{input}$ for each input. The chain
# rule says that is all we need, as long as a node's `backward` runs only **after** every use of
# its output has sent back its contribution. An order with that property is a **topological
# order** of the graph: every tensor comes after all the tensors it feeds. The engine finds one
# with an iterative depth-first search (iterative, so a graph 100,000 ops deep does not hit
# Python's recursion limit). Here is its code:

# %%
print(inspect.getsource(_topological_order))

# %% [markdown]
# Now we do by hand what `loss.backward()` does: seed $\partial L/\partial L = 1$, walk the order,
# call each op's `backward` with the gradient its output has collected, and **add** what it returns
# into each input's gradient.

# %%
grads = {id(loss): np.ones_like(loss.data)}
for t in _topological_order(loss):
    if t._ctx is None:
        continue  # a leaf: its gradient is complete
    in_grads = t._ctx.fn.backward(t._ctx, grads[id(t)])
    in_grads = in_grads if isinstance(in_grads, tuple) else (in_grads,)
    for p, g in zip(t._ctx.inputs, in_grads):
        if p is not None and p.requires_grad:
            grads[id(p)] = grads.get(id(p), 0) + g
    shown = ", ".join("None" if g is None else np.array2string(np.asarray(g), precision=4) for g in in_grads)
    print(f"{t._ctx.fn.op_name():>4}.backward(dout={np.array2string(grads[id(t)], precision=4)}) -> {shown}")

loss.backward()  # the engine's walk: the same order and the same calls
for name, leaf in (("x", x), ("w", w), ("b", b)):
    print(f"dL/d{name}: by hand {np.round(grads[id(leaf)], 6)}, engine {np.round(leaf.grad, 6)}")

# %% [markdown]
# And by pencil: $\partial L/\partial y = 2(y - 1)$, $\partial y/\partial s = 1 - y^2$, and
# $\partial s/\partial w = x$, so $\partial L/\partial w = 2(y-1)(1-y^2)\,x$:

# %%
yv = y.item()
print("formula:", 2 * (yv - 1) * (1 - yv**2) * x.data)

# %% [markdown]
# ## A tensor used twice: gradients add up
#
# In $f(a) = a \cdot a + a$ the tensor $a$ feeds three places. Each use sends its own
# contribution back, and the engine adds them ($+{=}$, never $=$), giving $2a + 1$. Overwriting
# instead of adding is the classic autograd bug: it would keep only the last contribution.

# %%
a = Tensor(np.array([3.0]), requires_grad=True)
f = a * a + a
names = {id(a): "a", id(f): "f"}
draw_graph(f, names)
f.backward()
print("df/da =", a.grad, " (2a + 1 =", 2 * a.data + 1, ")")

# %% [markdown]
# ## Writing an op
#
# Every op in the package is a `Function` with two static methods side by side: `forward` works
# on plain arrays and may save what its backward needs in `ctx`; `backward` gets `dout` and
# returns one gradient per input. Here is the package's `tanh`, saving its output because
# $\tanh' = 1 - \tanh^2$:

# %%
print(inspect.getsource(primitives.Tanh))


# %% [markdown]
# Writing a new one is the same. Softplus, $y = \log(1 + e^x)$, is not in the package; its
# derivative is the sigmoid, $\sigma(x) = 1/(1 + e^{-x})$. `np.logaddexp(0, x)` computes
# $\log(e^0 + e^x)$ without overflow.

# %%
class Softplus(Function):
    """y = log(1 + exp(x));  dx = dout * sigmoid(x)"""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.logaddexp(0.0, x)

    @staticmethod
    def backward(ctx, dout):
        (x,) = ctx.saved
        return dout / (1.0 + np.exp(-x))


t = Tensor(np.linspace(-3, 3, 7), requires_grad=True)
Softplus.apply(t).sum().backward()
print("softplus'(x) =", np.round(t.grad, 4))

# %% [markdown]
# ## gradcheck: is the backward right?
#
# A backward can be wrong in ways no error message reveals: the loss still falls, only slower,
# or not at all. The test is to compare it with **finite differences**. For the scalar
# $L = \sum_i f(x)_i\, r_i$ with a random $r$ (so every output element matters),
#
# $$\frac{\partial L}{\partial x_j} \approx \frac{L(x + \varepsilon e_j) - L(x - \varepsilon e_j)}{2\varepsilon},$$
#
# one element $j$ at a time. The central difference has a truncation error of order
# $\varepsilon^2$; floating point adds a rounding error of order $u/\varepsilon$, where $u$ is
# the unit roundoff ($10^{-16}$ in float64, $10^{-7}$ in float32). The picture shows both for
# $\tanh'(0.7)$:

# %%
x0 = 0.7
exact = 1 - np.tanh(x0) ** 2
eps = np.logspace(-12, -1, 60)
fig, ax = plt.subplots(figsize=(6.5, 3.5))
for dtype in (np.float64, np.float32):
    plus, minus = np.tanh(np.asarray(x0 + eps, dtype=dtype)), np.tanh(np.asarray(x0 - eps, dtype=dtype))
    numeric = (plus - minus).astype(np.float64) / (2 * eps)
    ax.loglog(eps, np.abs(numeric - exact) + 1e-17, label=np.dtype(dtype).name)
ax.axvline(1e-6, color="gray", ls=":", label="gradcheck's default eps")
ax.set_xlabel("eps")
ax.set_ylabel("|finite difference - exact|")
ax.legend()
plt.show()

# %% [markdown]
# In float64 the error falls to about $10^{-11}$ for $\varepsilon$ near $10^{-6}$; in float32 the
# best it does is about $10^{-5}$ (near $\varepsilon = 10^{-3}$), and at $\varepsilon = 10^{-6}$
# it is off by $10^{-2}$: as large as the mistakes we want to find. That is why `gradcheck` copies
# every input to float64 first. It passes our Softplus, and for a broken
# backward it says where and how it is wrong:

# %%
print("Softplus:", gradcheck(Softplus.apply, [np.linspace(-2, 2, 5)]))


class BrokenSoftplus(Softplus):
    @staticmethod
    def backward(ctx, dout):
        (x,) = ctx.saved
        return dout / (1.0 + np.exp(x))  # the sign in the exponent is wrong


try:
    gradcheck(BrokenSoftplus.apply, [np.linspace(-2, 2, 5)])
except nt.GradcheckError as err:
    print(err)

# %% [markdown]
# ## Parameter updates
#
# With gradients in hand, learning is a loop (§3.3.3): forward, backward, and a step of every
# parameter against its gradient, $\theta \leftarrow \theta - \eta\, \partial L/\partial \theta$.
# Here the neuron learns to output 0.8 for one input and -0.3 for another; `optim.SGD` does the
# same update for whole models.

# %%
inputs = np.array([[0.5, -1.0, 2.0], [1.0, 0.5, -0.5]])
targets = np.array([0.8, -0.3])
w = Tensor(np.zeros(3), requires_grad=True)
b = Tensor(np.array(0.0), requires_grad=True)
lr, history = 0.3, []
for step in range(60):
    pred = (Tensor(inputs) @ w + b).tanh()
    loss = ((pred - targets) ** 2).mean()
    w.grad = b.grad = None  # gradients accumulate, so clear them before each backward
    loss.backward()
    w.data -= lr * w.grad  # on the plain arrays: an update is not part of any graph
    b.data -= lr * b.grad
    history.append(loss.item())
fig, ax = plt.subplots(figsize=(6, 2.8))
ax.semilogy(history)
ax.set_xlabel("step")
ax.set_ylabel("loss")
plt.show()
print("prediction after training:", np.round(pred.data, 3), " targets:", targets)

# %% [markdown]
# ## Your turn: the backward of tanh
#
# Replace the `raise` line with your code and run the cell. `check` runs gradcheck on your
# backward paired with the package's forward and says PASS, or shows the worst element and a
# hint. (The solution is in `nptransformer/exercise_solutions.py`; try first.)

# %% tags=["exercise"]
def tanh_backward(y, dy):
    """The backward of y = tanh(x), elementwise.

    y: the forward's output tanh(x) (the forward saved y, not x); dy: dL/dy.
    Return dx = dL/dx, same shape.
    """
    raise NotImplementedError("tanh_backward: replace this line with your code")

check("tanh", tanh_backward)

# %% [markdown]
# ## Exercises
#
# 1. **Warm-up two.** `check("mul", mul_backward)` checks the backward of $a \odot b$; start from
#    `print(nptransformer.exercises.stub("mul"))`. The second test case broadcasts `b`: why does
#    your backward not need to sum anything for it?
# 2. **Count the nodes.** Build softmax from primitives, `e = x.exp(); e / e.sum(axis=-1,
#    keepdims=True)`, and draw its graph; then draw `F.softmax(x)`. How many arrays does each keep
#    for the backward? (This is why the package fuses softmax, layer norm and attention.)
# 3. **Deep graphs.** Apply `.tanh()` 20,000 times in a row and call `backward()`. It works; why
#    would a recursive graph walk fail here?
# 4. **Overwrite instead of add.** In the hand-written backward loop above, replace
#    `grads.get(id(p), 0) + g` by `g`. Which gradients change for `f = a * a + a`, and what does
#    gradcheck say?
# 5. **Softplus from its output.** Rewrite `Softplus.backward` to use the saved output $y$
#    instead of $x$ (hint: $\sigma(x) = 1 - e^{-y}$) and gradcheck it.
# 6. **Learning rate.** Rerun the training loop with `lr = 0.05` and `lr = 5`. Plot the three
#    loss curves together.
