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
# # 03 · Softmax and cross-entropy: the backward pass
#
# *Source: §3.2.2 "Normalization and softmax", §4.2 (the softmax inside attention) and §5.3
# (`nn.CrossEntropyLoss`, the loss of pre-training and fine-tuning).*
#
# ## What you will learn
#
# - What softmax does to a vector of scores, and what a **temperature** does to it.
# - Why every implementation subtracts the **maximum** first, and what happens if it does not.
# - The softmax **Jacobian** $\operatorname{diag}(y) - y y^\top$, and why the backward never builds
#   it: $dx = y \odot (dy - \langle dy, y\rangle)$.
# - **Cross-entropy** fused with log-softmax: the gradient $p - \text{onehot}(t)$, and why the
#   fused op is the stable one.
# - **Label smoothing**: the target $q$, the gradient $p - q$, and why it stops logits from
#   growing forever.
# - You write both backward passes yourself and `check` them.
#
# The full derivations, step by step: `docs/derivations/softmax.md` and
# `docs/derivations/cross_entropy.md`.

# %%
import matplotlib.pyplot as plt
import numpy as np

from nptransformer import Tensor
from nptransformer import functional as F
from nptransformer.exercises import check

# %% [markdown]
# ## Softmax turns scores into probabilities
#
# $$y_i = \frac{e^{x_i}}{\sum_j e^{x_j}}$$
#
# Every $y_i$ is positive and they sum to 1. Dividing the scores by a **temperature** $\tau$
# before the softmax sharpens the distribution ($\tau < 1$) or flattens it ($\tau > 1$): sampling
# from a language model at low temperature picks the likeliest words, at high temperature it
# takes more risks.

# %%
logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0])
fig, axes = plt.subplots(1, 4, figsize=(11, 2.6), sharey=True)
for ax, tau in zip(axes, (0.25, 0.5, 1.0, 2.0)):
    ax.bar(range(len(logits)), F.softmax(Tensor(logits / tau)).numpy())
    ax.set_title(f"temperature {tau}")
    ax.set_xticks(range(len(logits)), [f"{v:g}" for v in logits])
    ax.set_xlabel("logit")
axes[0].set_ylabel("probability")
plt.show()

# %% [markdown]
# ## Subtract the maximum
#
# In float32, $e^{x}$ overflows to `inf` once $x > 88.7$, and then $\infty / \infty$ is NaN.
# Subtracting any constant from every score leaves softmax unchanged (the factor $e^{-m}$
# cancels), and with $m = \max_j x_j$ every exponent is $\le 0$: nothing can overflow, and the
# denominator is at least 1. Attention scores and output logits do reach such sizes in training.

# %%
big = np.array([90.0, 100.0, 80.0], dtype=np.float32)
with np.errstate(over="ignore", invalid="ignore"):
    naive = np.exp(big) / np.exp(big).sum()
print("naive exp(x) / sum exp(x):", naive)
print("F.softmax:                ", F.softmax(Tensor(big)).numpy())

# %% [markdown]
# ## The Jacobian, and why we never build it
#
# Each $y_i$ depends on every $x_j$, through the denominator:
#
# $$\frac{\partial y_i}{\partial x_j} = y_i(\delta_{ij} - y_j), \qquad J = \operatorname{diag}(y) - y y^\top .$$
#
# The engine can show us $J$: back-propagating a one-hot `grad` through $y$ gives one row of $J$.

# %%
x = Tensor(np.array([1.0, 2.0, 0.5, -0.5, 0.0]), requires_grad=True)
y = F.softmax(x)
rows = []
for i in range(len(x)):
    x.grad = None
    y.backward(grad=np.eye(len(x))[i], retain_graph=True)
    rows.append(x.grad)
J_engine = np.array(rows)
yv = y.numpy()
J_formula = np.diag(yv) - np.outer(yv, yv)
print("max |engine - formula| =", np.abs(J_engine - J_formula).max())

fig, ax = plt.subplots(figsize=(4, 3.4))
im = ax.imshow(J_formula, cmap="RdBu_r", vmin=-0.25, vmax=0.25)
ax.set_title("softmax Jacobian $\\partial y_i / \\partial x_j$")
ax.set_xlabel("j")
ax.set_ylabel("i")
fig.colorbar(im)
plt.show()

# %% [markdown]
# Positive on the diagonal (raising $x_i$ raises $y_i$), negative elsewhere (and lowers every
# other $y_j$), and every row sums to 0, because the $y$ always sum to 1.
#
# The backward needs only $dx = J^\top dy$, and $J$ is symmetric:
#
# $$dx_j = \sum_i dy_i\, y_i (\delta_{ij} - y_j) = y_j \Big(dy_j - \sum_i dy_i\, y_i\Big),
# \qquad dx = y \odot (dy - \langle dy, y\rangle).$$
#
# $O(V)$ work and memory instead of $O(V^2)$. For GPT-2's vocabulary of 50,257 words the
# Jacobian of one position would take 50,257² float32 numbers:

# %%
dy = np.random.default_rng(0).standard_normal(len(x))
print("J^T dy :", np.round(J_formula.T @ dy, 6))
print("formula:", np.round(yv * (dy - (dy * yv).sum()), 6))
print(f"one GPT-2 Jacobian: {50257**2 * 4 / 2**30:.1f} GiB; the vector y: {50257 * 4 / 2**10:.0f} KiB")

# %% [markdown]
# ## Cross-entropy, fused with log-softmax
#
# For a row of logits $z$ with correct class $t$, the loss is $-\log p_t$ with $p =
# \operatorname{softmax}(z)$. Written with $\log\text{-}\operatorname{sum}\text{-}\exp$,
#
# $$\ell = -z_t + \log \sum_c e^{z_c}, \qquad \frac{\partial \ell}{\partial z_c} = p_c - \mathbb{1}[c = t].$$
#
# The gradient is "what the model predicts minus what it should have predicted". With the mean
# over $N$ rows, each row's gradient is divided by $N$. `F.cross_entropy` computes all of this
# in one op; the engine agrees with the formula:

# %%
rng = np.random.default_rng(1)
z = Tensor(rng.standard_normal((4, 6)) * 2, requires_grad=True)
target = np.array([0, 3, 5, 1])
loss = F.cross_entropy(z, target)
loss.backward()
p = F.softmax(z.detach()).numpy()
onehot = np.eye(6)[target]
print("loss:", loss.item(), " = mean of -log p_t:", -np.log(p[np.arange(4), target]).mean())
print("max |dz - (p - onehot)/N| =", np.abs(z.grad - (p - onehot) / 4).max())

fig, axes = plt.subplots(1, 3, figsize=(10, 2.4), sharey=True)
for ax, values, title in zip(axes, (p[1], onehot[1], (p - onehot)[1]), ("p = softmax(z)", "one-hot target", "gradient p - onehot")):
    ax.bar(range(6), values, color=["tab:red" if c == target[1] else "tab:blue" for c in range(6)])
    ax.set_title(title)
    ax.axhline(0, color="k", lw=0.5)
plt.show()

# %% [markdown]
# The gradient pushes the target logit up (negative gradient, red) and every other logit down in
# proportion to how much probability it wrongly takes.
#
# **Why fused.** Composing `log(softmax(z))` first rounds tiny probabilities to exactly 0 and then
# takes their log: $-\infty$, and a NaN gradient. `F.log_softmax` computes
# $z - \max z - \log\sum e^{z - \max z}$ directly, which stays finite:

# %%
z_far = Tensor(np.array([0.0, 120.0], dtype=np.float32))
with np.errstate(divide="ignore"):
    print("log(softmax(z)):", np.log(F.softmax(z_far).numpy()))
print("F.log_softmax(z):", F.log_softmax(z_far).numpy())

# %% [markdown]
# ## Label smoothing
#
# With a one-hot target the loss keeps falling as the target logit grows, so training can push
# logits towards infinity and make the model over-confident. **Label smoothing** (used by the
# original Transformer with $\varepsilon = 0.1$) trains against a softened target
#
# $$q = (1 - \varepsilon)\,\text{onehot}(t) + \varepsilon / V,$$
#
# $\varepsilon/V$ on every class, the target included. The loss becomes $-\sum_c q_c \log p_c$ and
# its gradient is simply $p - q$. It is zero when $p = q$: at a **finite** margin. Below, the
# target logit is $m$ and the other $V - 1$ logits are 0:

# %%
V = 10
margins = np.linspace(-2, 12, 200)
grid = np.zeros((len(margins), V))
grid[:, 0] = margins  # class 0 is the target
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for eps in (0.0, 0.1):
    m = Tensor(grid, requires_grad=True)
    losses = F.cross_entropy(m, np.zeros(len(margins), dtype=np.int64), label_smoothing=eps, reduction="none")
    losses.sum().backward()
    axes[0].plot(margins, losses.numpy(), label=f"$\\varepsilon$ = {eps}")
    axes[1].plot(margins, m.grad[:, 0], label=f"$\\varepsilon$ = {eps}")
q_target = 1 - 0.1 + 0.1 / V
best = np.log(q_target * (V - 1) / (1 - q_target))  # p_target = q_target there
for ax in axes:
    ax.axvline(best, color="gray", ls=":")
    ax.set_xlabel("target logit minus the others")
    ax.legend()
axes[0].set_ylabel("loss")
axes[1].set_ylabel("gradient of the target logit")
axes[1].axhline(0, color="k", lw=0.5)
plt.show()
print(f"with eps = 0.1 the loss is smallest at margin {best:.2f}, where p_target = q_target = {q_target}")

# %% [markdown]
# ## Your turn: the softmax backward
#
# `y` is the saved output (the forward does not keep `x`), `dy` the gradient from above, both of
# shape `(..., V)`. Work along the last axis only. Replace the `raise` line and run the cell.

# %% tags=["exercise"]
def softmax_backward(y, dy):
    """The backward of y = softmax(x) along the last axis.

    y:  the forward's output, shape (..., V); every row sums to 1.
    dy: dL/dy, the gradient arriving from above, same shape.
    Return dx = dL/dx, same shape.
    """
    raise NotImplementedError("softmax_backward: replace this line with your code")

check("softmax", softmax_backward)

# %% [markdown]
# ## Your turn: the cross-entropy backward, with label smoothing
#
# The forward saved $p = \operatorname{softmax}(\text{logits})$ of shape `(N, V)`. The loss is
# the mean over the $N$ rows; `dloss` is the gradient arriving from above (a 0-d array).
# `check` tests $\varepsilon = 0$ and $\varepsilon = 0.1$.

# %% tags=["exercise"]
def cross_entropy_backward(p, target, dloss, label_smoothing):
    """The backward of loss = mean over the N rows of -sum_c q_c log p_c, with p = softmax(logits)
    and the smoothed target q = (1 - label_smoothing) * onehot(target) + label_smoothing / V.

    p:      softmax(logits), shape (N, V) (rebuilt from what the forward saved, not the logits)
    target: the correct class of each row, integers of shape (N,)
    dloss:  dL/dloss, a 0-d array (the loss is one number)
    label_smoothing: the float eps in [0, 1]
    Return dlogits = dL/dlogits, shape (N, V).
    """
    raise NotImplementedError("cross_entropy_backward: replace this line with your code")

check("cross_entropy", cross_entropy_backward)

# %% [markdown]
# ## Exercises
#
# 1. **log-softmax.** Derive the backward of $y = \operatorname{log\_softmax}(x)$ and check it
#    with `check("log_softmax", log_softmax_backward)` (start from
#    `print(nptransformer.exercises.stub("log_softmax"))`). Why does the forward save $y$ and
#    not $p$?
# 2. **Shift invariance, seen in the gradient.** Show that the rows of the softmax Jacobian sum
#    to 0. What does that say about $\sum_j dx_j$, and why must it be so?
# 3. **Temperature.** For $y = \operatorname{softmax}(x/\tau)$, what is $\partial L/\partial \tau$?
#    Check your formula against the engine (make $\tau$ a Tensor).
# 4. **Ignored positions.** Call `F.cross_entropy(z, target, ignore_index=-100)` with one target
#    set to -100. Which rows of the gradient are zero, and what is $N$ in the mean now?
# 5. **The smoothed loss never reaches 0.** Show that its minimum over $p$ is the entropy of $q$,
#    and compute it for $\varepsilon = 0.1$, $V = 10$. Compare with the left plot.
# 6. **How small can probabilities get?** Find the smallest logit gap at which `log(softmax(z))`
#    returns `-inf` in float32, and in float64.
