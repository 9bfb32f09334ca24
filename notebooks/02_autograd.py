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
#   **computation graph** of op nodes, and how to draw that graph.
# - Why the graph holds nodes and the arrays each backward needs, not every tensor: memory.
# - Why the backward pass needs a **topological order**, and how the engine finds one.
# - **Backward** as the chain rule applied once per node, from the loss back to the leaves,
#   with gradients **adding up** where a tensor is used twice.
# - How to write your own op: a `Function` with `forward` and `backward` side by side.
# - **gradcheck**: testing a backward against finite differences, and why in float64.
# - A **parameter update**: one step of gradient descent, repeated.

# %%
import inspect
import weakref

import matplotlib.pyplot as plt
import numpy as np

import nptransformer as nt
from nptransformer import Function, Tensor, gradcheck
from nptransformer.autograd import topological_order
from nptransformer.exercises import check
from nptransformer.functional import primitives

# %% [markdown]
# ## The forward pass records a graph
#
# A small function: a neuron $y = \tanh(w \cdot x + b)$ and a squared error against the target 1,
# $L = (y - 1)^2$. Each operation returns a new `Tensor`; when an input requires a gradient, the
# result also remembers *how it was made*: `t.grad_fn` is its **node** in the graph (a `Context`).
# The node knows the op (`grad_fn.fn`, a `Function` class) and where each input came from
# (`grad_fn.inputs`): a leaf tensor such as `x` is its own node, a tensor made by an op is
# represented by that op's node, and an argument that needs no gradient (the exponent 2, the
# constant 1) is `None`. PyTorch calls the same links `grad_fn.next_functions`. (We use float64
# arrays here; a float64 array keeps its dtype, which is what gradcheck will want later.)

# %%
x = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
w = Tensor(np.array([1.5, 0.3, -0.7]), requires_grad=True)
b = Tensor(np.array(0.2), requires_grad=True)

s = (x * w).sum() + b
y = s.tanh()
loss = (y - 1.0) ** 2

print("loss =", loss.item())
print("loss.grad_fn =", loss.grad_fn, "| its inputs:", loss.grad_fn.inputs)
print("y.grad_fn    =", y.grad_fn, "| its inputs:", y.grad_fn.inputs)
print("the sum's inputs:", s.grad_fn.inputs[0].inputs[0].inputs, "(x and w themselves)")
print("x is a leaf:", x.is_leaf, "| loss is a leaf:", loss.is_leaf)

# %% [markdown]
# Following `grad_fn.inputs` from the loss backwards reaches every node that contributed to it.
# Drawing them shows the graph that §3.3.1 talks about: circles are the ops, boxes the leaves,
# arrows point the way the forward pass ran; the tensors in between are the arrows. (A Python
# number such as the `1.0` becomes a constant array, not a node: it gets no gradient.)


# %%
def draw_graph(root, names):
    """Op nodes as circles and leaves as boxes, found by walking `grad_fn.inputs` back from `root`.

    ``names`` labels nodes: a leaf by its name, an op node by the tensor it made.
    """
    order = topological_order(root)  # every node, outputs first
    inputs = {n: () if isinstance(n, Tensor) else n.inputs for n in order}
    depth = {order[0]: 0}  # columns counted back from the output
    for node in order:
        for p in inputs[node]:
            if p is not None:
                depth[p] = max(depth.get(p, 0), depth[node] + 1)
    rows, pos = {}, {}
    for node in order:
        col = depth[node]
        pos[node] = (-2.2 * col, -1.3 * rows.get(col, 0))
        rows[col] = rows.get(col, 0) + 1
    fig, ax = plt.subplots(figsize=(1.9 * (max(depth.values()) + 1), 1.3 * max(rows.values()) + 1.2))
    for node in order:
        nx, ny = pos[node]
        if isinstance(node, Tensor):
            ax.text(nx, ny, names.get(node, f"shape {node.shape}"), ha="center", va="center", fontsize=9,
                    bbox=dict(boxstyle="round", fc="lightyellow", ec="gray"))
            continue
        ax.text(nx, ny, node.fn.op_name(), ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="circle", fc="lightblue", ec="steelblue"))
        if node in names:
            ax.text(nx, ny - 0.5, names[node], ha="center", va="top", fontsize=8)
        drawn = []
        for p in inputs[node]:
            if p is None:
                continue
            far = depth[p] - depth[node] > 1  # skips a column: bend around what is in between
            rad = 0.4 * far + 0.9 * drawn.count(p)  # a second use of the same input: another arc
            drawn.append(p)
            ax.annotate("", (nx - 0.35, ny), (pos[p][0] + 0.4, pos[p][1]),
                        arrowprops=dict(arrowstyle="->", color="gray", connectionstyle=f"arc3,rad={-rad}"))
    xs, ys = zip(*pos.values())
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.9, 0.8)
    ax.axis("off")
    plt.show()


names = {x: "x", w: "w", b: "b", s.grad_fn: f"s = {s.item():.3f}", y.grad_fn: f"y = {y.item():.3f}",
         loss.grad_fn: f"L = {loss.item():.3f}"}
draw_graph(loss, names)

# %% [markdown]
# ## Backward: the chain rule, node by node
#
# Every op knows its *local* derivative: given $\partial L / \partial\,\text{output}$ (called
# `dout`) its `backward` returns $\partial L / \partial\,\text{input}$ for each input. The chain
# rule says that is all we need, as long as a node's `backward` runs only **after** every use of
# its output has sent back its contribution. An order with that property is a **topological
# order** of the graph: every node comes after all the nodes it feeds. The engine finds one
# with an iterative depth-first search (iterative, so a graph 100,000 ops deep does not hit
# Python's recursion limit). Here is its code:

# %%
print(inspect.getsource(topological_order))

# %% [markdown]
# Now we do by hand what `loss.backward()` does: seed $\partial L/\partial L = 1$ at the loss's
# node, walk the order, call each op's `backward` (which takes the node itself as its `ctx`) with
# the gradient its output has collected, and **add** what it returns into each input node's
# gradient. The gradients are kept per node, in a dictionary.

# %%
grads = {loss.grad_fn: np.ones_like(loss.data)}
for node in topological_order(loss):
    if isinstance(node, Tensor):
        continue  # a leaf: its gradient is complete
    in_grads = node.fn.backward(node, grads[node])
    in_grads = in_grads if isinstance(in_grads, tuple) else (in_grads,)
    for p, g in zip(node.inputs, in_grads):
        if p is not None:
            grads[p] = grads.get(p, 0) + g
    shown = ", ".join("None" if g is None else np.array2string(np.asarray(g), precision=4) for g in in_grads)
    print(f"{node.fn.op_name():>4}.backward(dout={np.array2string(grads[node], precision=4)}) -> {shown}")

loss.backward()  # the engine's walk: the same order and the same calls
for name, leaf in (("x", x), ("w", w), ("b", b)):
    print(f"dL/d{name}: by hand {np.round(grads[leaf], 6)}, engine {np.round(leaf.grad, 6)}")

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
draw_graph(f, {a: "a", f.grad_fn: "f"})
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
# ## What the graph keeps, and what it lets go
#
# A node holds what its backward needs: the arrays its forward saved (`grad_fn.saved`), a few
# numbers, and its links to other nodes. It does **not** hold the tensors that flowed between the
# ops. So an intermediate tensor whose array no backward needs is freed as soon as the Python code
# lets go of it, long before `backward()`. Addition saves nothing (its local derivatives are 1);
# multiplication saves both factors (each is the other's derivative). A weak reference watches an
# array without keeping it alive:

# %%
def state(ref):
    return "alive" if ref() is not None else "freed"


big = Tensor(np.random.default_rng(0).standard_normal(1_000_000), requires_grad=True)  # 8 MB
u = big * 2.0
u_array = weakref.ref(u.data)
v = u + 1.0
del u
print(f"u only added:         its 8 MB array is {state(u_array)}")
u = big * 2.0
u_array = weakref.ref(u.data)
v = u * u
del u
print(f"u multiplied:         its array is {state(u_array)}, held by v.grad_fn.saved: "
      f"{any(a is u_array() for a in v.grad_fn.saved)}")
v.sum().backward()
print(f"after v's backward(): its array is {state(u_array)} (the walk released each node after its backward)")
print("v.grad_fn is now", v.grad_fn)

# %% [markdown]
# This is where a training step's memory goes: the arrays the nodes saved, which the backward
# releases node by node as it walks. In a Transformer block (notebook 07) two outputs of every
# layer are only added to the residual stream, the attention's output projection and the second
# feed-forward layer; a graph that kept every tensor would hold them until the backward, and
# `docs/benchmarks.md` ("Peak memory") measures what letting them go saves at the benchmark's
# largest size. `nptransformer.profile()` shows, op by op, the memory each node keeps
# (notebook 11).

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
#    for the backward? (Walk `topological_order(out)` and look at each op node's `saved`. This is
#    why the package fuses softmax, layer norm and attention.)
# 3. **Deep graphs.** Apply `.tanh()` 20,000 times in a row and call `backward()`. It works; why
#    would a recursive graph walk fail here?
# 4. **Overwrite instead of add.** In the hand-written backward loop above, replace
#    `grads.get(p, 0) + g` by `g`. Which gradients change for `f = a * a + a`, and what does
#    gradcheck say?
# 5. **Softplus from its output.** Rewrite `Softplus.backward` to use the saved output $y$
#    instead of $x$ (hint: $\sigma(x) = 1 - e^{-y}$) and gradcheck it.
# 6. **Learning rate.** Rerun the training loop with `lr = 0.05` and `lr = 5`. Plot the three
#    loss curves together.
