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
# # 06 · Positional encoding
#
# *Source: §2.2.2 "Positional encoding", §4.3 "The positional encoding of the Transformer" and
# §5.2, its PyTorch code.*
#
# ## What you will learn
#
# - Why attention, on its own, cannot tell word order: it is **permutation-equivariant**.
# - The **sinusoidal encoding** $PE_{(pos, 2i)} = \sin(pos/10000^{2i/d})$,
#   $PE_{(pos, 2i+1)} = \cos(pos/10000^{2i/d})$: its table as a picture, and its wavelengths.
# - The **relative-position property**: moving $k$ positions is the same rotation for every
#   position, so $PE(pos + k)$ is a fixed linear function of $PE(pos)$, and
#   $PE(p) \cdot PE(q)$ depends only on $p - q$.
# - How the encoding is added to the embeddings, and the learned alternative used by GPT and BERT.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

from nptransformer import Tensor
from nptransformer import nn

# %% [markdown]
# ## Attention does not see order
#
# Self-attention compares every position with every other through dot products, and nothing in
# those dot products says where a token stands. Shuffle the input tokens and the outputs come
# out shuffled the same way, each one unchanged: "dog bites man" and "man bites dog" would be the
# same bag of vectors. (Source §4.3: "the Transformer has no recurrence and no convolution, so
# position information has to be put in".)

# %%
nn.manual_seed(0)
C, T = 16, 5
attention = nn.MultiheadAttention(C, num_heads=2)
x = np.random.default_rng(0).standard_normal((1, T, C)).astype(np.float32)
perm = np.array([3, 0, 4, 1, 2])

out, _ = attention(Tensor(x))
out_perm, _ = attention(Tensor(x[:, perm]))
print("without positions, attention(shuffled x) == shuffled attention(x):", np.allclose(out_perm.numpy(), out.numpy()[:, perm], atol=1e-6))

encode = nn.PositionalEncoding(C, max_len=T)
out, _ = attention(encode(Tensor(x)))
out_perm, _ = attention(encode(Tensor(x[:, perm])))
print("with positions added,  attention(shuffled x) == shuffled attention(x):", np.allclose(out_perm.numpy(), out.numpy()[:, perm], atol=1e-6))

# %% [markdown]
# ## The sinusoidal table
#
# The original Transformer adds to each token's embedding a vector that depends only on its
# position (§4.3):
#
# $$PE_{(pos,2i)} = \sin\!\big(pos / 10000^{2i/d_{\text{model}}}\big), \qquad
# PE_{(pos,2i+1)} = \cos\!\big(pos / 10000^{2i/d_{\text{model}}}\big).$$
#
# Each pair of dimensions $(2i, 2i+1)$ is a sine and a cosine of the same frequency
# $\omega_i = 10000^{-2i/d}$: fast for the first dimensions (wavelength $2\pi$), slower and slower
# up to a wavelength of $10000 \cdot 2\pi$ for the last. Like the digits of a clock, the fast
# dimensions tell neighbours apart and the slow ones tell where in a long text we are.
# `nn.sinusoidal_table(max_len, d_model)` builds the table:

# %%
d_model, max_len = 128, 100
pe = nn.sinusoidal_table(max_len, d_model, dtype=np.float64)  # (max_len, d_model)

fig, axes = plt.subplots(1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1.3, 1]})
im = axes[0].imshow(pe, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1)
axes[0].set_xlabel("dimension")
axes[0].set_ylabel("position")
axes[0].set_title("PE(pos, dimension)")
fig.colorbar(im, ax=axes[0])
for dim in (0, 10, 30, 60):
    axes[1].plot(pe[:, dim], label=f"dimension {dim}: wavelength {2 * math.pi * 10000 ** (dim / d_model):.0f}")
axes[1].set_xlabel("position")
axes[1].legend(fontsize=8, loc="lower left")
plt.show()

# %% [markdown]
# The source's PyTorch code (§5.2) computes the frequencies as
# `exp(arange(0, d, 2) * (-log(10000) / d))`, the same numbers written as an exponential. Our
# table is the same, element for element:

# %%
position = np.arange(max_len)[:, None]
div_term = np.exp(np.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
source = np.zeros((max_len, d_model))
source[:, 0::2] = np.sin(position * div_term)
source[:, 1::2] = np.cos(position * div_term)
print("max |source - nn.sinusoidal_table| =", np.abs(source - pe).max())

# %% [markdown]
# ## Relative positions are rotations
#
# For one frequency $\omega$, the angle-addition formulas give
#
# $$\begin{pmatrix}\sin \omega(p+k) \\ \cos \omega(p+k)\end{pmatrix} =
# \begin{pmatrix}\cos \omega k & \sin \omega k \\ -\sin \omega k & \cos \omega k\end{pmatrix}
# \begin{pmatrix}\sin \omega p \\ \cos \omega p\end{pmatrix}.$$
#
# The matrix depends on the offset $k$, **not on the position $p$**. Stacking one such rotation
# per frequency gives a block-diagonal $R_k$ with $PE(p + k) = R_k\, PE(p)$ for every $p$: a
# layer that learns $R_k$ once can "look $k$ back" from anywhere. This is what the authors hoped
# would let the model attend by relative position.

# %%
def rotation(k):
    """The block-diagonal R_k with PE(p + k) = R_k PE(p), one 2x2 rotation per frequency."""
    omega = 10000.0 ** (-np.arange(0, d_model, 2) / d_model)
    R = np.zeros((d_model, d_model))
    for i, w in enumerate(omega):
        c, s = math.cos(w * k), math.sin(w * k)
        R[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[c, s], [-s, c]]
    return R


for k in (1, 5, 20):
    moved = pe[:-k] @ rotation(k).T  # R_k PE(p) for every p at once, (max_len - k, d_model)
    print(f"k = {k:2d}: max over all p of |R_k PE(p) - PE(p + k)| = {np.abs(moved - pe[k:]).max():.1e}")

# %% [markdown]
# A consequence: rotations keep lengths and angles, so the dot product of two encodings depends
# only on the distance between the positions,
# $PE(p) \cdot PE(q) = \sum_i \cos\big(\omega_i (p - q)\big)$. The matrix of all dot products is
# constant along every diagonal, and it falls off (not monotonically) with distance:

# %%
gram = pe @ pe.T  # (max_len, max_len)
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
im = axes[0].imshow(gram, cmap="viridis")
axes[0].set_xlabel("position q")
axes[0].set_ylabel("position p")
axes[0].set_title("PE(p) · PE(q)")
fig.colorbar(im, ax=axes[0])
for p in (0, 20, 40):
    axes[1].plot(np.arange(max_len - 40), gram[p, p:p + max_len - 40], label=f"from p = {p}", lw=2 if p == 0 else 1,
                 ls="-" if p == 0 else "--")
axes[1].set_xlabel("offset k = q - p")
axes[1].set_ylabel("PE(p) · PE(p + k)")
axes[1].legend()
plt.show()

# %% [markdown]
# The three curves lie on top of each other: only the offset matters.
#
# ## Adding it to the embeddings
#
# `nn.PositionalEncoding(d_model)` adds the first $T$ rows of the table to a batch of embeddings
# `(B, T, C)` (batch-first; the source's code is sequence-first, `x.size(0)`, so there the
# table is indexed by the first axis). Every encoding row has norm $\sqrt{d/2}$ (each sine-cosine
# pair contributes $\sin^2 + \cos^2 = 1$). The original paper multiplies the token embeddings by
# $\sqrt{d_{\text{model}}}$ so that they are not drowned by it.

# %%
encode = nn.PositionalEncoding(d_model, max_len=max_len)
tokens = Tensor(np.zeros((2, 7, d_model), dtype=np.float32))  # a batch of 2 sequences of 7 zero embeddings
added = encode(tokens)
print("shape:", added.shape, "| rows are the table's first 7:", np.allclose(added.numpy()[1], pe[:7], atol=1e-6))
print("norm of every encoding row:", np.round(np.linalg.norm(pe, axis=1)[:4], 4), "= sqrt(d/2) =", math.sqrt(d_model / 2))

# %% [markdown]
# ## The learned alternative
#
# GPT and BERT do not use sines: they learn one vector per position, an `Embedding` indexed by
# position (`nn.LearnedPositionalEmbedding`). That is simpler and works as well in practice, but
# a learned table has nothing to say about positions beyond the longest it was trained on, while
# the sinusoidal formula is defined for every position. Later models moved the position into the
# attention itself (relative biases, rotary embeddings); the rotation above is the seed of the
# rotary idea.

# %%
learned = nn.LearnedPositionalEmbedding(max_len=16, d_model=d_model)
print(learned)
print("sinusoids at position 10,000:", np.round(nn.sinusoidal_table(10001, 4, dtype=np.float64)[-1], 4))

# %% [markdown]
# ## Exercises
#
# 1. **Why both sine and cosine?** With sines only, is there still a matrix $R_k$ with
#    $PE(p + k) = R_k PE(p)$ for all $p$? Try to build one, or show why none exists.
# 2. **Nearest neighbours.** For position 50, which other position has the most similar encoding
#    (cosine similarity)? Plot the similarity against position for $d = 16$ and $d = 512$.
# 3. **The base.** Replace 10000 by 100 in the formula (write your own table with NumPy). What
#    happens to the dot-product matrix beyond position 600? Why do long-context models raise the
#    base instead?
# 4. **Learned positions.** In notebook 05's `Lookback`, replace `nn.PositionalEncoding` with
#    `nn.LearnedPositionalEmbedding(T, C)`. Does it still learn? Draw the cosine similarities of
#    the learned position vectors after training.
# 5. **Rotary, in one line.** Rotary embeddings rotate each query and key by $R_{pos}$ instead of
#    adding $PE$. Show with `rotation(k)` that $(R_p q) \cdot (R_s k') = q \cdot (R_{s-p} k')$:
#    the score depends only on the offset.
