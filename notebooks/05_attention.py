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
# # 05 · Attention
#
# *Source: §2.2.1 "Self-attention", §2.2.3 "Multi-head attention", §3.2.1 "Computing queries,
# keys and values" and §4.2 "The attention computation of the Transformer".*
#
# ## What you will learn
#
# - **Scaled dot-product attention**, $\operatorname{softmax}(QK^\top/\sqrt{d_k})\,V$, as a soft
#   lookup: every query reads a weighted average of the values.
# - **Why $\sqrt{d_k}$**: without it the scores grow with the head width, the softmax saturates,
#   and the gradient through it vanishes. We measure all three.
# - **Masks**: causal (no peeking at the future) and padding (no attending to filler), and the
#   two opposite boolean conventions you will meet.
# - **Multi-head attention**: several smaller attentions side by side; a tiny model trained here
#   in a second shows two heads learning two different jobs.
# - The **backward pass** of attention, which you then write yourself.
#
# The derivation, step by step: `docs/derivations/attention.md`.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

import nptransformer as nt
from nptransformer import Tensor
from nptransformer import functional as F
from nptransformer import nn, optim
from nptransformer.exercises import check
from nptransformer.functional.attention import attention_from_primitives

# %% [markdown]
# ## A soft lookup
#
# A dictionary lookup compares a query with every key and returns the value of the one that
# matches. Attention does the same softly: it scores the query against every key with a dot
# product, turns the scores into weights with a softmax, and returns the weighted average of the
# values (§4.2):
#
# $$\operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\Big(\frac{QK^\top}{\sqrt{d_k}}\Big)V .$$
#
# Shapes, batch-first as everywhere in this package: queries $(B, H, T, D)$, keys $(B, H, S, D)$,
# values $(B, H, S, D_v)$, weights $(B, H, T, S)$ and output $(B, H, T, D_v)$. Below: one query
# and three keys in $D = 2$; the query points almost the way the second key does.

# %%
k = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]])  # (1, S=3, D=2)
v = np.array([[[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]]])  # (1, S=3, Dv=2)
q = np.array([[[0.3, 3.0]]])  # (1, T=1, D=2)
out, weights = F.scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), return_weights=True)
print("scores q·k / sqrt(2):", np.round(q[0] @ k[0].T / math.sqrt(2), 3))
print("weights:             ", np.round(weights.numpy()[0], 3))
print("output:              ", np.round(out.numpy()[0], 3), "(mostly the second value, a little of the others)")

# %% [markdown]
# ## Why divide by $\sqrt{d_k}$
#
# Take query and key entries independent with mean 0 and variance 1. Then
# $q \cdot k = \sum_{i=1}^{d} q_i k_i$ is a sum of $d$ terms of variance 1: its variance is $d$.
# Wide heads give large scores; the softmax of large scores is nearly one-hot; and a one-hot
# softmax has a Jacobian $\operatorname{diag}(p) - pp^\top$ of nearly zero, so almost no gradient
# reaches $Q$ and $K$ (the source: "to prevent the softmax's gradient from vanishing at large
# values"). Dividing by $\sqrt{d}$ brings the variance back to 1 for every width. Below, 256
# random queries against 16 random keys, for widths from 1 to 1024; the gradient is what the
# engine back-propagates through `F.softmax` to the scores for a random upstream gradient.

# %%
rng = np.random.default_rng(0)
widths = 2 ** np.arange(0, 11)
upstream = rng.standard_normal((256, 16))
stats = {"unscaled": ([], []), "scaled by 1/sqrt(d)": ([], [])}
samples = {}
for d in widths:
    scores = rng.standard_normal((256, d)) @ rng.standard_normal((16, d)).T  # (256, 16), variance d
    if d in (4, 64, 512):
        samples[d] = scores.ravel()
    for name, s in (("unscaled", scores), ("scaled by 1/sqrt(d)", scores / math.sqrt(d))):
        z = Tensor(s, requires_grad=True)
        p = F.softmax(z)
        p.backward(upstream)
        stats[name][0].append(p.numpy().max(axis=-1).mean())
        stats[name][1].append(np.abs(z.grad).mean())

fig, axes = plt.subplots(1, 3, figsize=(13, 3.3))
for d, values in samples.items():
    axes[0].hist(values, bins=60, histtype="step", density=True, label=f"d = {d}")
axes[0].set_title("unscaled scores q·k")
axes[0].legend()
for name, (max_weight, grad) in stats.items():
    axes[1].semilogx(widths, max_weight, marker="o", ms=3, base=2, label=name)
    axes[2].loglog(widths, grad, marker="o", ms=3, base=2, label=name)
axes[1].set_title("largest softmax weight (mean)")
axes[2].set_title("mean |gradient| reaching the scores")
for ax in axes[1:]:
    ax.set_xlabel("head width d")
    ax.legend()
plt.show()

# %% [markdown]
# Unscaled, the largest weight heads for 1 (the softmax picks one key and ignores the rest) and
# the gradient reaching the scores falls more than tenfold as $d$ grows; scaled, both stay put
# whatever the width.
#
# ## Masks
#
# A **causal** mask keeps query $t$ from attending to keys $s > t$: a language model must not
# see the word it is predicting. A **padding** mask keeps every query away from the filler
# positions that make sequences of different lengths fit in one array. Masked scores become
# $-\infty$ before the softmax, so their weights are exactly 0.
#
# Two conventions, both common: `F.scaled_dot_product_attention` takes a boolean mask with
# **True = may attend** (as `torch.nn.functional.scaled_dot_product_attention`), while
# `nn.MultiheadAttention`'s `attn_mask` / `key_padding_mask` and `nptransformer.data.causal_mask`
# take **True = blocked** (as `torch.nn.MultiheadAttention`). Check which one a function wants.

# %%
T = 6
rng = np.random.default_rng(1)
q, k, v = (Tensor(rng.standard_normal((1, T, 8))) for _ in range(3))
is_padding = np.array([False, False, False, False, True, True])  # the last two keys are filler
may_attend = {
    "no mask": None,
    "causal (is_causal=True)": "causal",
    "padding": ~is_padding[None, :],  # (1, S): broadcast over the queries
    "causal and padding": np.tril(np.ones((T, T), dtype=bool)) & ~is_padding[None, :],
}
fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
for ax, (title, mask) in zip(axes, may_attend.items()):
    if mask is None or isinstance(mask, np.ndarray):
        _, w = F.scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    else:
        _, w = F.scaled_dot_product_attention(q, k, v, is_causal=True, return_weights=True)
    ax.imshow(w.numpy()[0], cmap="viridis", vmin=0, vmax=1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("key s")
axes[0].set_ylabel("query t")
plt.show()

# %% [markdown]
# ## Multi-head attention
#
# One attention averages everything a query finds interesting into a single vector. Multi-head
# attention (§2.2.3) runs $H$ smaller attentions side by side, each on its own learned
# projection of width $D = C/H$, and concatenates the results:
#
# $$\operatorname{MultiHead}(Q, K, V) = \operatorname{Concat}(\text{head}_1, \dots, \text{head}_H)\,W^O, \qquad
# \text{head}_i = \operatorname{Attention}(QW_i^Q, KW_i^K, VW_i^V).$$
#
# In code the $H$ projections are one `Linear` of width $C$ whose output is reshaped
# $(B, T, C) \to (B, T, H, D) \to (B, H, T, D)$, so all heads run in one batched call.
#
# A task that needs two heads: read a random sequence of tokens and output, at every position,
# both the token **1 step back** and the token **3 steps back**. One attention can only fetch one
# mixture per query; two heads can fetch one each. The model: token embeddings plus the sinusoidal
# positions of notebook 06, one causal `nn.MultiheadAttention` with 2 heads, and two `Linear`
# read-outs.

# %%
VOCAB, T, C, H = 8, 12, 32, 2


class Lookback(nn.Module):
    """ids (B, T) -> logits for the token 1 back and 3 back (B, T, VOCAB) each, and the attention weights."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, C, std=0.5)
        self.pos = nn.PositionalEncoding(C, max_len=T)
        self.attn = nn.MultiheadAttention(C, H)
        self.back1 = nn.Linear(C, VOCAB)
        self.back3 = nn.Linear(C, VOCAB)

    def forward(self, ids):
        h = self.pos(self.embed(ids))  # (B, T, C)
        a, weights = self.attn(h, is_causal=True, average_attn_weights=False)  # weights (B, H, T, T)
        return self.back1(a), self.back3(a), weights


nn.manual_seed(0)
model = Lookback()
optimizer = optim.Adam(model.parameters(), lr=1e-2)
rng = np.random.default_rng(0)
losses = []
for step in range(500):
    ids = rng.integers(0, VOCAB, (64, T))
    logits1, logits3, _ = model(ids)
    # positions 3.. have a token 3 back; predict ids[t-1] and ids[t-3] there
    loss = F.cross_entropy(logits1[:, 3:], ids[:, 2:-1]) + F.cross_entropy(logits3[:, 3:], ids[:, :-3])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print(f"loss: {losses[0]:.3f} at the start, {losses[-1]:.4f} after {len(losses)} steps")

with nt.no_grad():
    ids = rng.integers(0, VOCAB, (1, T))
    _, _, weights = model(ids)
fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
axes[0].semilogy(losses)
axes[0].set_title("training loss")
axes[0].set_xlabel("step")
for h in range(H):
    axes[h + 1].imshow(weights.numpy()[0, h], cmap="viridis", vmin=0, vmax=1)
    axes[h + 1].set_title(f"head {h}: weights")
    axes[h + 1].set_xlabel("key s")
    axes[h + 1].set_ylabel("query t")
plt.show()

# %% [markdown]
# Each head has settled on one offset: its weights lie along a diagonal one step or three steps
# below the main one. Nobody told them which head does what.
#
# ## The backward pass
#
# Fix one batch element and head. The forward is $Z = \alpha\, QK^\top + M$ (scale $\alpha$, mask
# $M$ of 0 and $-\infty$), $P = \operatorname{softmax}(Z)$ along the keys, $O = PV$. Going back,
# one step at a time:
#
# 1. $O = PV$ is a matrix product: $dV = P^\top dO$ and $dP = dO\, V^\top$.
# 2. The softmax, row by row (notebook 03): $dZ = P \odot \big(dP - \operatorname{rowsum}(dP \odot P)\big)$.
#    Masked entries have $P = 0$, so they get $dZ = 0$ with no special code.
# 3. $Z = \alpha QK^\top$: $dQ = \alpha\, dZ\, K$ and $dK = \alpha\, dZ^\top Q$.
#
# The fused op keeps only $P$ for the backward. The same function built from primitive ops
# (`attention_from_primitives`) keeps an array for every step; both give the same gradients:

# %%
rng = np.random.default_rng(2)
arrays = [rng.standard_normal(shape) for shape in ((2, 2, 5, 4), (2, 2, 7, 4), (2, 2, 7, 3))]  # q, k, v: (B, H, T|S, D)
dout = rng.standard_normal((2, 2, 5, 3))
grads = {}
for name, attention in (("fused", F.scaled_dot_product_attention), ("from primitives", attention_from_primitives)):
    qkv = [Tensor(a, requires_grad=True) for a in arrays]
    attention(*qkv).backward(dout)
    grads[name] = [t.grad for t in qkv]
for name, a, b in zip(("dq", "dk", "dv"), grads["fused"], grads["from primitives"]):
    print(f"{name}: max |fused - primitives| = {np.abs(a - b).max():.1e}")

# %% [markdown]
# ## Your turn: the attention backward
#
# You get `q`, `k`, `v`, the weights `p` (after the mask and the softmax), the upstream gradient
# `dout` and the `scale`. Return `(dq, dk, dv)`. `check` tests a cross-attention ($T \ne S$) and a
# causal self-attention.

# %% tags=["exercise"]
def attention_backward(q, k, v, p, dout, scale):
    """The backward of out = p @ v with p = softmax(scale * q @ k^T + mask) along the last axis.

    q: (..., T, D)   k: (..., S, D)   v: (..., S, Dv)
    p: the attention weights, (..., T, S); 0 where the mask forbids a key
    dout: dL/dout, (..., T, Dv)   scale: the float that multiplied the scores
    Return (dq, dk, dv) with the shapes of q, k and v.
    Tip: a.swapaxes(-1, -2) transposes the last two axes of a batched array.
    """
    raise NotImplementedError("attention_backward: replace this line with your code")

check("attention", attention_backward)

# %% [markdown]
# ## Exercises
#
# 1. **Saturation in numbers.** For $d = 512$ unscaled, what fraction of the 256 query rows has a
#    largest weight above 0.99? And scaled?
# 2. **One head for two jobs.** Train `Lookback` with `H = 1` (and the same `C`). How low does the
#    loss go? Draw its weights and explain what the single head settled on.
# 3. **A query that may see nothing.** Give `F.scaled_dot_product_attention` a mask row that is
#    all False. What are the output and the gradients for that query? PyTorch's reference
#    implementation returns NaN there; why is 0 the better answer for training?
# 4. **Permutation.** Without positional encodings, permute the tokens of a sequence and run
#    self-attention (no mask). Show that the output is permuted the same way. What does that say
#    about word order? (Notebook 06 fixes it.)
# 5. **Memory.** The fused op keeps no $(B, H, T, S)$ array for the backward: it rebuilds the
#    weights $P$ from $Q$, $K$ and the mask. How many bytes would one such array take in float32
#    for $B = 8$, $H = 12$, $T = S = 2048$? How many arrays of that shape does
#    `attention_from_primitives` keep? (Walk `nptransformer.autograd.topological_order(out)` and
#    look at the shapes in each op node's `saved`.)
# 6. **The mask's gradient.** A floating-point mask is added to the scores and is
#    differentiable. What is its gradient, and where have you seen it above?
