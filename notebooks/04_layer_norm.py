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
# # 04 · Layer normalization: the backward pass
#
# *Source: §3.2.3 "Residual connections and layer normalization" and §5.1, where every
# encoder layer ends its two sub-layers with `norm1` and `norm2`.*
#
# ## What you will learn
#
# - What layer normalization does to each row of activations, and what $\gamma$ and $\beta$ add.
# - Why a deep stack of residual layers needs it: without it the activations drift in scale.
# - The backward pass: $x$ reaches $\hat x$ along **three paths** (directly, through the mean,
#   through the variance), giving
#   $dx = \frac{1}{\sigma}\big(g - \operatorname{mean}(g) - \hat x\, \operatorname{mean}(g \hat x)\big)$
#   with $g = dy\,\gamma$.
# - Why $dx$ always sums to zero and is orthogonal to $\hat x$.
# - You write the backward yourself and `check` it.
#
# The derivation, line by line: `docs/derivations/layer_norm.md`.

# %%
import matplotlib.pyplot as plt
import numpy as np

from nptransformer import Tensor, gradcheck
from nptransformer import functional as F
from nptransformer import nn
from nptransformer.autograd import topological_order
from nptransformer.exercises import check

# %% [markdown]
# ## The forward pass
#
# Each row $x \in \mathbb{R}^C$ (one token's vector) is normalized on its own, over its $C$
# features:
#
# $$\mu = \frac{1}{C}\sum_j x_j, \quad \sigma^2 = \frac{1}{C}\sum_j (x_j - \mu)^2, \quad
# \hat x = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}, \quad y = \gamma \odot \hat x + \beta .$$
#
# After it every row has mean 0 and variance 1; the learned $\gamma$ and $\beta$ (shape $C$,
# shared by all rows) then set the scale and offset each feature should have. Unlike batch
# normalization nothing is averaged across the batch, so a sequence of any length and a batch of
# one behave the same in training and at inference.

# %%
rng = np.random.default_rng(0)
C = 16
x = rng.standard_normal((5, C)) * np.array([[0.5], [1], [3], [8], [1]]) + np.array([[0], [4], [-2], [10], [0]])
y = F.layer_norm(Tensor(x), Tensor(np.ones(C)), Tensor(np.zeros(C))).numpy()

fig, axes = plt.subplots(1, 2, figsize=(10, 2.8), sharey=True)
for ax, data, title in ((axes[0], x, "rows of x"), (axes[1], y, "rows of layer_norm(x)")):
    for i, row in enumerate(data):
        ax.scatter(row, np.full(C, i), s=12)
    ax.set_title(title)
axes[0].set_ylabel("row")
plt.show()
print("row means after:", np.round(y.mean(axis=1), 6), " row stds after:", np.round(y.std(axis=1), 4))

# %% [markdown]
# ## Why a deep stack needs it
#
# A Transformer block adds each sub-layer's output to its input (the residual connection). Without
# normalization, every addition grows the variance of the residual stream, layer after layer. The
# source's encoder layer normalizes **after** the addition (post-LN, `norm(x + f(x))`, as in the
# original paper); GPT-2 and most later models normalize the sub-layer's input instead (pre-LN,
# `x + f(norm(x))`). Here $f$ is a random `Linear` + ReLU + `Linear`, 24 layers deep, initialized
# so that $f$ keeps the variance of its input (He initialization: weights with variance $2/C_{in}$
# before a ReLU, $1/C_{in}$ otherwise). Then each residual addition without normalization doubles
# the variance; pre-LN adds a constant each layer; post-LN resets it every time.

# %%
nn.manual_seed(0)
C, LAYERS = 64, 24
blocks = [nn.Sequential(nn.Linear(C, 4 * C), nn.Linear(4 * C, C)) for _ in range(LAYERS)]
norms = [nn.LayerNorm(C) for _ in range(LAYERS)]
init = np.random.default_rng(3)
for block in blocks:
    for layer, gain in zip(block, (2.0, 1.0)):
        layer.weight.data = (init.standard_normal(layer.weight.shape) * np.sqrt(gain / layer.in_features)).astype(np.float32)
        layer.bias.data[:] = 0.0


def f(block, h):
    return block[1](block[0](h).relu())


x0 = Tensor(np.random.default_rng(1).standard_normal((32, C)).astype(np.float32))
stds = {"no normalization": [], "post-LN: norm(x + f(x))": [], "pre-LN: x + f(norm(x))": []}
h = {name: x0 for name in stds}
for block, norm in zip(blocks, norms):
    h["no normalization"] = h["no normalization"] + f(block, h["no normalization"])
    h["post-LN: norm(x + f(x))"] = norm(h["post-LN: norm(x + f(x))"] + f(block, h["post-LN: norm(x + f(x))"]))
    h["pre-LN: x + f(norm(x))"] = h["pre-LN: x + f(norm(x))"] + f(block, norm(h["pre-LN: x + f(norm(x))"]))
    for name in stds:
        stds[name].append(h[name].numpy().std())

fig, ax = plt.subplots(figsize=(6.5, 3.2))
for name, values in stds.items():
    ax.semilogy(range(1, LAYERS + 1), values, marker="o", ms=3, label=name)
ax.set_xlabel("layer")
ax.set_ylabel("std of the residual stream")
ax.legend()
plt.show()

# %% [markdown]
# ## The backward pass: three paths
#
# Write $g = dy \odot \gamma$, the gradient that reaches $\hat x$ (in the forward
# $y = \gamma \odot \hat x + \beta$). Also $d\beta = \sum dy$ and $d\gamma = \sum dy \odot \hat x$,
# summed over all rows, because every row used the same $\gamma$ and $\beta$.
#
# Now $\hat x_i = (x_i - \mu)\,/\,\sigma$, and $x_j$ moves $\hat x_i$ in three ways:
#
# 1. **directly**, when $i = j$: $\;\partial \hat x_i / \partial x_j \ni \delta_{ij}/\sigma$;
# 2. **through the mean**: $\partial \mu/\partial x_j = 1/C$, giving $-\frac{1}{C\sigma}$;
# 3. **through the variance**: $\partial \sigma/\partial x_j = \hat x_j / C$, giving
#    $-\frac{\hat x_i \hat x_j}{C\sigma}$.
#
# So $\partial \hat x_i/\partial x_j = \frac{1}{\sigma}\big(\delta_{ij} - \frac{1}{C} - \frac{\hat x_i \hat x_j}{C}\big)$,
# and summing $g_i$ times it over $i$:
#
# $$dx = \frac{1}{\sigma}\Big(g - \operatorname{mean}(g) - \hat x \odot \operatorname{mean}(g \odot \hat x)\Big).$$
#
# The fused op `F.layer_norm` computes exactly this. The same function composed from primitive ops
# (mean, subtract, square, sqrt, divide, ...) gives the same numbers through a much bigger graph:

# %%
rng = np.random.default_rng(2)
xv, wv, bv = rng.standard_normal((3, 8)), 1 + 0.3 * rng.standard_normal(8), rng.standard_normal(8)
dy = rng.standard_normal((3, 8))

fused = [Tensor(a, requires_grad=True) for a in (xv, wv, bv)]
out_fused = F.layer_norm(*fused)
composed = [Tensor(a, requires_grad=True) for a in (xv, wv, bv)]
xt, wt, bt = composed
centered = xt - xt.mean(axis=-1, keepdims=True)
out_composed = centered / ((centered * centered).mean(axis=-1, keepdims=True) + 1e-5).sqrt() * wt + bt
print("nodes in the graph (ops and leaves): fused", len(topological_order(out_fused)),
      "| composed", len(topological_order(out_composed)))
out_fused.backward(dy)
out_composed.backward(dy)
for name, a, b in zip(("dx", "dweight", "dbias"), fused, composed):
    print(f"{name}: max |fused - composed| = {np.abs(a.grad - b.grad).max():.2e}")
print("gradcheck of the fused op:", gradcheck(F.layer_norm, [xv, wv, bv]))

# %% [markdown]
# ## What the formula says: a projection
#
# With $\gamma = 1$, $dx$ is $g$ with two directions removed: its mean (the component along
# $\mathbf 1$) and its component along $\hat x$, then scaled by $1/\sigma$. That is no accident.
# Adding a constant to every $x_j$ does not change $\hat x$ at all, and scaling $x - \mu$ changes
# it only through the tiny $\epsilon$; so the loss cannot change (or barely changes) in those
# directions, and the gradient is orthogonal to them: $\sum_j dx_j = 0$ exactly, and
# $\sum_j dx_j \hat x_j = 0$ up to a term of order $\epsilon / \sigma^2$.

# %%
row = 0
g = dy[row] * wv
xhat = (xv[row] - xv[row].mean()) / np.sqrt(xv[row].var() + 1e-5)
parts = {"g": g, "- mean(g)": -np.full(8, g.mean()), "- x̂ mean(g x̂)": -xhat * (g * xhat).mean()}
fig, ax = plt.subplots(figsize=(8, 2.8))
width = 0.2
for k, (name, values) in enumerate(parts.items()):
    ax.bar(np.arange(8) + (k - 1.5) * width, values, width, label=name)
ax.bar(np.arange(8) + 1.5 * width, fused[0].grad[row] * np.sqrt(xv[row].var() + 1e-5), width, color="k", label="σ · dx (their sum)")
ax.axhline(0, color="k", lw=0.5)
ax.set_xlabel("feature j")
ax.legend(ncol=4, fontsize=8)
plt.show()
xhat_rows = (out_fused.numpy() - bv) / wv
print("sum of dx per row:", [f"{v:.1e}" for v in fused[0].grad.sum(axis=1)])
print("dx · x̂ per row:   ", [f"{v:.1e}" for v in (fused[0].grad * xhat_rows).sum(axis=1)])
print("variance per row: ", [f"{v:.2f}" for v in xv.var(axis=1)], "(eps = 1e-5)")

# %% [markdown]
# ## Your turn: the layer-norm backward
#
# The backward gets $\hat x$ (`xhat`, rebuilt from what the forward saved), $1/\sigma$ per row
# (`rstd`, shape `(..., 1)`) and $\gamma$ (`weight`). Return `(dx, dweight, dbias)`. `check` tests a 2-D and a 3-D input.

# %% tags=["exercise"]
def layer_norm_backward(xhat, rstd, weight, dy):
    """The backward of y = xhat * weight + bias, where xhat = (x - mean(x)) * rstd over the last axis
    (C features) and rstd = 1 / sqrt(var(x) + eps).

    xhat:   the normalized input, shape (..., C)
    rstd:   1 / sigma for each row, shape (..., 1)
    weight: gamma, shape (C,)
    dy:     dL/dy, shape (..., C)
    Return (dx, dweight, dbias): dx of shape (..., C); dweight and dbias of shape (C,).
    """
    raise NotImplementedError("layer_norm_backward: replace this line with your code")

check("layer_norm", layer_norm_backward)

# %% [markdown]
# ## Exercises
#
# 1. **Sum or mean?** Replace the two `.mean(axis=-1)` in your answer with `.sum(axis=-1)` and
#    run `check` again. Read what it says; why does the error grow with $C$?
# 2. **The Jacobian.** Build $\partial \hat x/\partial x$ for one row of $C = 6$ with the engine
#    (one backward per output element, as notebook 03 did for softmax), draw it as a heatmap, and
#    compare it with $\frac{1}{\sigma}(I - \frac{1}{C}\mathbf{1}\mathbf{1}^\top - \frac{1}{C}\hat x \hat x^\top)$.
#    What are its two zero eigenvalues' eigenvectors?
# 3. **A constant row.** Feed a row whose entries are all equal. What are $\hat x$ and $dx$? What
#    would happen without $\epsilon$?
# 4. **RMSNorm** (used by LLaMA) drops the mean: $y = \gamma \odot x / \sqrt{\operatorname{mean}(x^2) + \epsilon}$.
#    Derive its backward and gradcheck it as a `Function` of your own.
# 5. **Pre-LN or post-LN?** In the depth plot the post-LN stream stays at std 1 while pre-LN
#    grows slowly. Which one lets the gradient reach the first layer unchanged through the
#    residual path? (Hint: follow $dx$ through $x + f(\operatorname{norm}(x))$.)
