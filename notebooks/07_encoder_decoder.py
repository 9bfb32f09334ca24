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
# # 07 · The encoder-decoder Transformer, trained on dates
#
# *Source: §3.1 "The encoder-decoder structure of the Transformer" (the encoder, the decoder,
# how they interact), §3.3 "Forward and backward propagation" (the computation graph, the
# gradients, the parameter updates) and §5.1, the PyTorch encoder layer.*
#
# ## What you will learn
#
# - The **task**: dates written thirteen human ways (`"the 5th of march, 2021"`, `"3/5/21"`,
#   `"2021年3月5日"`, ...) translated into ISO 8601 (`"2021-03-05"`): a small translation problem
#   with one right answer.
# - The **architecture** with real shapes: a drawn diagram, the module tree with its parameter
#   counts (counted by hand too), and one batch followed layer by layer from token ids to logits.
#   The encoder layer is the source's §5.1 layer, line for line.
# - **Teacher forcing** and the **shifted target**: why the decoder reads `<bos> y1 … yn` and
#   must write `y1 … yn <eos>`, and how the **causal mask** lets it learn every position at once.
# - **One training step** written out (§3.3): forward, loss, backward, clip, update. Then the
#   package's `Trainer` runs 600 of them in about half a minute: the loss curve and the exact
#   match it reaches.
# - **Cross-attention** as a picture: which source characters each output character reads, for
#   dates written in words and in digits.
# - **Greedy and beam decoding** side by side, and a close look at the **errors** that are left.

# %%
import datetime
import inspect
import math
import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import MaxNLocator

import nptransformer as nt
from nptransformer import functional as F
from nptransformer import nn, optim
from nptransformer.data import (
    BOS_ID,
    DATE_FORMATS,
    EOS_ID,
    PAD_ID,
    causal_mask,
    date_pairs,
    date_split,
    format_date,
)
from nptransformer.decoding import beam_search
from nptransformer.decoding.generate import Seq2SeqScorer
from nptransformer.plotting import moving_average
from nptransformer.train import Seq2SeqTask, TrainConfig, Trainer, build_model, load_checkpoint

# %% [markdown]
# ## The task: dates, written many ways
#
# A translation task needs pairs of sentences, a model that reads one and writes the other, and
# a way to tell whether the output is right. Real translation has many right answers; dates have
# exactly one, so **exact match** (the whole output right, character for character) measures the
# model honestly. `nptransformer.data.date_pairs` writes a date in one of thirteen formats and
# pairs it with its ISO form. Here is one date in each of them:

# %%
day = datetime.date(2021, 3, 5)
for name in DATE_FORMATS:
    print(f"{name:>22}:  {format_date(day, name)!r:32} -> {day.isoformat()}")
print(f"{'upper and lower case':>22}:  {format_date(day, 'ordinal_of_month', 'upper')!r}, "
      f"{format_date(day, 'short_weekday', 'lower')!r}")

# %% [markdown]
# The formats pull in different directions. `05.03.2021` is day first and `3/5/21` month first,
# so the model must learn each format's convention rather than a position for "the day"; `3/5/21`
# also hides the century (two-digit years 50–99 are 19xx, 00–49 are 20xx); the weekday in
# `Fri, Mar 5 2021` is redundant; and the model has to learn twelve month names in three cases.
#
# The 36,525 days from 1950 to 2049 are split once, with a fixed seed, into training days and
# held-out days. Training batches only ever use training days; every number below that says
# "held-out" is measured on dates the model has never seen, in any format.

# %%
train_days, heldout_days = date_split()
print(f"{len(train_days)} training days, {len(heldout_days)} held-out days")
for source, target in date_pairs(6, seed=1):
    print(f"  {source!r:32} -> {target}")

# %% [markdown]
# ## From characters to a batch
#
# The model reads and writes characters. `TrainConfig` holds every setting of a run (the same
# ones `nptransformer train` takes on the command line) and `Seq2SeqTask` turns it into data: a
# `CharTokenizer` over every character a date can contain, shared by source and target, and
# batches of freshly drawn pairs. We keep the defaults of the command line (a model of width 64,
# 2 + 2 layers, batches of 64) and ask for 600 steps instead of 1,500.

# %%
config = TrainConfig(task="dates", steps=600, eval_every=100, eval_examples=500)
task = Seq2SeqTask(config)
tokenizer = task.tokenizer
V = tokenizer.vocab_size
print(f"vocabulary: {V} tokens = 7 special tokens {tokenizer.special_tokens} + {V - 7} characters")
print("ids of '3/5/21':", tokenizer.encode("3/5/21"))

# %% [markdown]
# A batch (`seq2seq_batch`, called by `task.batch(step)`) pads the sources to a common length and
# builds **two** rows from each target:
#
# - `tgt_in`, what the decoder **reads**: `<bos> y1 … yn`,
# - `tgt_out`, what it must **write** at each position: `y1 … yn <eos>`,
#
# the same sequence shifted by one. Counting from 1, position $t$ reads `<bos>` $y_1 … y_{t-1}$
# and is scored on predicting $y_t$. This is **teacher forcing**: during training the decoder always reads the
# *true* previous characters, not its own guesses, so all $T$ positions are trained in one
# forward pass. (At inference there is no true target: the decoder reads its own output, one
# character at a time. We get there below.) Padding (`<pad>`, grey) fills the shorter sources;
# the ISO targets all have 10 characters, so the targets need none.

# %%
batch = task.batch(1)
src, src_pad, tgt_in, tgt_out, tgt_pad = batch
B, S = src.shape
T = tgt_in.shape[1]
print(f"src {src.shape}, src_padding_mask {src_pad.shape}, tgt_in {tgt_in.shape}, tgt_out {tgt_out.shape}")


def show_tokens(ax, ids, title):
    """A grid of token ids shown as their characters: padding grey, <bos> and <eos> orange."""
    colours = np.ones(ids.shape + (3,))  # white
    colours[ids == PAD_ID] = (0.85, 0.85, 0.85)
    colours[(ids == BOS_ID) | (ids == EOS_ID)] = (1.0, 0.85, 0.6)
    ax.imshow(colours, aspect="auto")
    for (r, c), i in np.ndenumerate(ids):
        token = tokenizer.id_to_token(int(i))
        label = {"<pad>": "", " ": "·", "<bos>": "bos", "<eos>": "eos"}.get(token, token)
        ax.text(c, r, label, ha="center", va="center", fontsize=7 if len(label) > 1 else 10)
    ax.set_xticks(range(ids.shape[1]))
    ax.set_yticks(range(ids.shape[0]))
    ax.set_xticks(np.arange(ids.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(ids.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="#bbbbbb", lw=0.8)
    ax.tick_params(which="both", length=0, labelsize=7)
    ax.set_title(title, fontsize=10)


shown = 4
fig, axes = plt.subplots(1, 3, figsize=(15, 2.4), gridspec_kw={"width_ratios": [S, T, T]})
show_tokens(axes[0], src[:shown], f"src: what the encoder reads ({B} rows in all)")
show_tokens(axes[1], tgt_in[:shown], "tgt_in: what the decoder reads")
show_tokens(axes[2], tgt_out[:shown], "tgt_out: what it must write")
for ax in axes:
    ax.set_xlabel("position")
axes[0].set_ylabel("example")
plt.show()

# %% [markdown]
# ## The architecture (§3.1)
#
# **The encoder** (§3.1.1) reads the whole source at once. Its token embeddings (times
# $\sqrt{C}$, as in the paper) plus the sinusoidal positions of notebook 06 go through a stack of
# identical layers, each **self-attention** (every source character looks at every other) and a
# position-wise **feed-forward network**, each wrapped in a residual connection and a LayerNorm.
# Its output, one vector of width $C$ per source character, is the **memory**.
#
# **The decoder** (§3.1.2) writes the target. Its layers have three sub-layers: **masked**
# self-attention over the characters written so far, **cross-attention** over the memory, and a
# feed-forward network. A final linear layer (`generator`) turns each position's vector into
# $V$ logits for the next character.
#
# **The interaction** (§3.1.3) is the cross-attention, and only there: its queries come from the
# decoder, its keys and values from the encoder's memory, so each output position reads the
# source characters it needs. In the diagram, the shapes are those of the batch above.

# %%
C, H, FF, LAYERS = config.d_model, config.nhead, config.dim_feedforward, config.num_layers
COLOURS = {"io": "#eeeeee", "embed": "#d4edda", "attn": "#ffe0b3", "cross": "#f8c9a0", "ff": "#cce5ff",
           "norm": "#fff3b0", "out": "#e2d4f0"}


def box(ax, x, y, text, kind, w=3.6, h=0.62):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04,rounding_size=0.12",
                                facecolor=COLOURS[kind], edgecolor="#555555", lw=0.8, zorder=2))
    ax.text(x, y, text, ha="center", va="center", fontsize=8.5, zorder=3)


def arrow(ax, start, end, colour="#444444", lw=1.0):
    ax.annotate("", xy=end, xytext=start, zorder=1,
                arrowprops=dict(arrowstyle="-|>", color=colour, lw=lw, shrinkA=0, shrinkB=0))


def path(ax, points, colour="#444444", lw=1.0):
    """Straight segments through ``points``, an arrow head on the last one."""
    xs, ys = zip(*points)
    ax.plot(xs[:-1], ys[:-1], color=colour, lw=lw, zorder=1)
    arrow(ax, points[-2], points[-1], colour, lw)


def stack(ax, x, bottom, sublayers, label):
    """The boxes of one layer type: (text, kind) pairs, each sub-layer followed by add & norm, with
    the residual path around it; a frame saying how many times the layer repeats."""
    y = bottom
    for text, kind in sublayers:
        box(ax, x, y, text, kind)
        box(ax, x, y + 1, "add & LayerNorm", "norm")
        arrow(ax, (x, y + 0.31), (x, y + 0.69))
        if y > bottom:
            arrow(ax, (x, y - 0.69), (x, y - 0.31))
        path(ax, [(x, y - 0.5), (x - 2.0, y - 0.5), (x - 2.0, y + 1), (x - 1.8, y + 1)], "#888888")  # residual
        y += 2
    top = y - 1
    ax.add_patch(FancyBboxPatch((x - 2.25, bottom - 0.65), 4.5, top - bottom + 1.25, boxstyle="round,pad=0.05",
                                facecolor="none", edgecolor="#999999", ls="--", lw=1, zorder=0))
    ax.text(x + 2.4, (bottom + top) / 2, label, rotation=90, va="center", fontsize=9, color="#555555")
    return top


fig, ax = plt.subplots(figsize=(10.5, 9))
ENC, DEC = 2.5, 9.8
box(ax, ENC, 0, f"source ids (B, S) = {src.shape}", "io")
box(ax, ENC, 1.1, f"embedding × √C + positions\n(B, S, C) = ({B}, {S}, {C})", "embed", h=0.8)
top = stack(ax, ENC, 2.6, [(f"self-attention, {H} heads", "attn"), (f"feed-forward {C} → {FF} → {C}", "ff")],
            f"× {LAYERS} encoder layers (§5.1)")
box(ax, ENC, top + 1.3, f"LayerNorm → memory\n(B, S, C) = ({B}, {S}, {C})", "norm", h=0.8)
memory_y = top + 1.3
box(ax, DEC, 0, f"tgt_in ids (B, T) = {tgt_in.shape}", "io")
box(ax, DEC, 1.1, f"embedding × √C + positions\n(B, T, C) = ({B}, {T}, {C})", "embed", h=0.8)
top = stack(ax, DEC, 2.6, [("masked (causal) self-attention", "attn"),
                           ("cross-attention: queries from here,\nkeys and values from the memory", "cross"),
                           (f"feed-forward {C} → {FF} → {C}", "ff")], f"× {LAYERS} decoder layers")
box(ax, DEC, top + 1.3, "LayerNorm", "norm")
box(ax, DEC, top + 2.4, f"generator: Linear {C} → {V}\nlogits (B, T, V) = ({B}, {T}, {V})", "out", h=0.8)
box(ax, DEC, top + 3.6, "softmax: p(next character)", "out")
for x in (ENC, DEC):
    arrow(ax, (x, 0.31), (x, 0.7))
    arrow(ax, (x, 1.5), (x, 2.29))
arrow(ax, (ENC, memory_y - 1.0), (ENC, memory_y - 0.4))
arrow(ax, (DEC, top + 0.31), (DEC, top + 1.0))
arrow(ax, (DEC, top + 1.61), (DEC, top + 2.0))
arrow(ax, (DEC, top + 2.8), (DEC, top + 3.29))
cross_y, bend = 2.6 + 2, (ENC + DEC) / 2 - 0.6  # the cross-attention box; where the memory's path turns down
path(ax, [(ENC + 1.8, memory_y), (bend, memory_y), (bend, cross_y), (DEC - 1.8, cross_y)], "tab:red", 2)
ax.text(bend + 0.15, (memory_y + cross_y) / 2, "memory: the keys\nand values of\nevery cross-\nattention",
        color="tab:red", fontsize=9, ha="left", va="center")
ax.set_xlim(0.2, 12.4)
ax.set_ylim(-0.5, top + 4.0)
ax.set_axis_off()
ax.set_title(f"Seq2SeqTransformer: C = {C}, H = {H}, {LAYERS} + {LAYERS} layers, V = {V}")
plt.show()

# %% [markdown]
# The real thing: `build_model(task.model_spec())` builds the `nn.Seq2SeqTransformer` that the
# trainer trains. Its module tree, with every module's parameter count (the dropouts are left
# out: with `dropout=0` they do nothing, and they own no parameters anyway):

# %%
nn.manual_seed(config.seed)
model = build_model(task.model_spec())
for name, module in model.named_modules():
    depth = name.count(".") + bool(name)
    if isinstance(module, nn.Dropout) or depth > 5 or (depth > 4 and ".1." in name):
        continue
    label = f"{'  ' * depth}{name.rsplit('.', 1)[-1] or 'model'}: {type(module).__name__}({module.extra_repr()})"
    print(f"{label[:92]:94}{module.num_parameters():>8,}")
print("(layers.1 of each stack has the same children as layers.0)")

# %% [markdown]
# Every count follows from the shapes. A `Linear(a, b)` has $ab + b$ parameters, a
# `LayerNorm(C)` $2C$ (gain and bias), an `Embedding(V, C)` $VC$; the positions are a fixed table,
# a buffer, not parameters. So a multi-head attention has $4(C^2 + C)$ (the $Q$, $K$, $V$ and
# output projections; the heads split those, they add nothing), and:

# %%
attention = 4 * (C * C + C)
feed_forward = (C * FF + FF) + (FF * C + C)
encoder_layer = attention + feed_forward + 2 * 2 * C
decoder_layer = 2 * attention + feed_forward + 3 * 2 * C
total = 2 * V * C + LAYERS * (encoder_layer + decoder_layer) + 2 * 2 * C + (C * V + V)
print(f"attention {attention:,}, feed-forward {feed_forward:,}")
print(f"encoder layer {encoder_layer:,} (model: {model.transformer.encoder.layers[0].num_parameters():,}), "
      f"decoder layer {decoder_layer:,} (model: {model.transformer.decoder.layers[0].num_parameters():,})")
print(f"total {total:,} (model: {model.num_parameters():,}); attention and feed-forward: "
      f"{LAYERS * (3 * attention + 2 * feed_forward) / total:.0%} of it")

# %% [markdown]
# Almost all the weights sit in the attention projections and the feed-forward networks (these
# hold the larger share, $2 \cdot C \cdot 4C$ per layer against $4C^2$ per attention); the
# embeddings and the generator are small because the vocabulary is. With a vocabulary of 50,000
# tokens, as in GPT-2, the embedding table alone would be bigger than this whole model.
#
# ### The encoder layer is the source's §5.1 code
#
# `nn.TransformerEncoderLayer.forward`, in its default post-LN branch, is the source's
# `forward` line for line (with `self.activation` for `F.relu`, and an optional pre-LN branch
# on top):

# %%
print(inspect.getsource(nn.TransformerEncoderLayer.forward))

# %% [markdown]
# To be sure the code means what it says, run the source's six lines on the layer's own parts and
# compare with calling the layer:

# %%
layer = model.transformer.encoder.layers[0]
x = nt.Tensor(np.random.default_rng(0).standard_normal((2, 7, C)).astype(np.float32))
with nt.no_grad():
    src2 = layer.self_attn(x, x, x)[0]
    h = layer.norm1(x + layer.dropout1(src2))
    src2 = layer.linear2(layer.dropout(F.relu(layer.linear1(h))))
    by_hand = layer.norm2(h + layer.dropout2(src2))
    print("max |source's lines - layer(x)| =", float(np.abs(by_hand.numpy() - layer(x).numpy()).max()))

# %% [markdown]
# ### One batch, layer by layer
#
# `model(src, tgt_in)` is `encode` then `decode`. Here is the same forward pass taken apart, on
# the batch drawn above, printing the shape after every stage (B batch, S source positions,
# T target positions, C width, V vocabulary; `docs/notation.md`). The last lines check that the
# pieces give exactly what the model gives.

# %%
with nt.no_grad():
    print(f"{'src ids':>34}: {src.shape}")
    x = model.src_tok_emb(src) * math.sqrt(C)
    print(f"{'embedding × √C':>34}: {x.shape}")
    x = model.positional(x)
    print(f"{'+ positions':>34}: {x.shape}")
    for i, enc_layer in enumerate(model.transformer.encoder.layers):
        x = enc_layer(x, src_key_padding_mask=src_pad)
        print(f"{f'encoder layer {i}':>34}: {x.shape}")
    memory = model.transformer.encoder.norm(x)
    print(f"{'final LayerNorm = memory':>34}: {memory.shape}")
    y = model.positional(model.tgt_tok_emb(tgt_in) * math.sqrt(C))
    print(f"{'tgt_in ids -> embedded + positions':>34}: {y.shape}")
    for i, dec_layer in enumerate(model.transformer.decoder.layers):
        y = dec_layer(y, memory, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=src_pad, tgt_is_causal=True)
        print(f"{f'decoder layer {i} (reads the memory)':>34}: {y.shape}")
    logits = model.generator(model.transformer.decoder.norm(y))
    print(f"{'LayerNorm, generator -> logits':>34}: {logits.shape}")
    print("\nsame as model.encode:", np.allclose(memory.numpy(), model.encode(src).numpy(), atol=1e-6),
          "   same as model(src, tgt_in):", np.allclose(logits.numpy(), model(src, tgt_in).numpy(), atol=1e-5))

# %% [markdown]
# The encoder keeps the source's length $S$ all the way and the decoder the target's length $T$;
# only cross-attention mixes the two, with weights of shape $(B, H, T, S)$.
#
# ## Masks
#
# Three attentions, three masks (notebook 05 explains the conventions; here True = blocked, as
# in torch.nn):
#
# - **encoder self-attention**: no query may attend to a padding key (`src_padding_mask`);
# - **decoder self-attention**: position $t$ may not attend to positions after $t$, the
#   **causal mask** (`causal_mask(T)`); this is what makes teacher forcing honest: without it,
#   the position that must predict $y_t$ could read $y_t$ at the next position of `tgt_in` and
#   copy it;
# - **cross-attention**: every output position may attend to every real source character, and
#   to no padding.
#
# Drawn for one example of the batch, a source about half as long as the longest (white = may
# attend, black = blocked; the padding positions have no tick label):

# %%
row = int(np.argmin(np.abs((~src_pad).sum(axis=1) - S // 2)))  # a source about half as long as the longest
src_chars = ["" if i == PAD_ID else tokenizer.id_to_token(int(i)).replace(" ", "·") for i in src[row]]
tgt_chars = ["bos" if i == BOS_ID else tokenizer.id_to_token(int(i)) for i in tgt_in[row]]
blocked = {
    "encoder self-attention (S × S)": np.broadcast_to(src_pad[row][None, :], (S, S)),
    "decoder self-attention (T × T): causal": causal_mask(T) | tgt_pad[row][None, :],
    "cross-attention (T × S)": np.broadcast_to(src_pad[row][None, :], (T, S)),
}
fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), gridspec_kw={"width_ratios": [S, T, S]})
for ax, (title, mask) in zip(axes, blocked.items()):
    ax.imshow(~mask, cmap="gray", vmin=0, vmax=1)
    queries = src_chars if mask.shape[0] == S else tgt_chars
    keys = src_chars if mask.shape[1] == S else tgt_chars
    ax.set_xticks(range(len(keys)), keys, fontsize=7)
    ax.set_yticks(range(len(queries)), queries, fontsize=7)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(title, fontsize=10)
plt.show()

# %% [markdown]
# The causal mask is not a convention on paper: change one character of `tgt_in` and only the
# logits at that position and after it move. The earlier positions cannot see it.

# %%
k = 5
changed = tgt_in.copy()
changed[:, k] = tokenizer.token_to_id("7")
with nt.no_grad():
    diff = np.abs(model(src, changed).numpy() - model(src, tgt_in).numpy()).max(axis=(0, 2))  # (T,)
print(f"changed tgt_in[:, {k}]; max |change of the logits| at each position t:")
print("  ".join(f"t={t}: {d:.1e}" for t, d in enumerate(diff)))

# %% [markdown]
# ## One training step, written out (§3.3)
#
# Training is the loop of notebook 02, on a bigger graph. One step, in the order of
# `Trainer._train_step`:
#
# 1. **forward** (§3.3.1): the batch through the model; every op records its inputs, building the
#    computation graph;
# 2. **loss**: the cross-entropy of the logits $(B, T, V)$ against `tgt_out` $(B, T)$, averaged
#    over the positions that are not padding (`ignore_index=PAD_ID`);
# 3. **backward** (§3.3.2): `loss.backward()` walks the graph in reverse and fills the `.grad`
#    of every one of the quarter million parameters, through embeddings, attention, layer norms
#    and softmax, each with the backward derived in notebooks 02–05;
# 4. **clip** the gradient's global norm to at most 1, a guard against the odd huge step;
# 5. **update** (§3.3.3): Adam moves each parameter against its gradient, scaled by running
#    averages of the gradient and of its square.
#
# A model that guessed uniformly among the $V$ characters would score $\ln V$; the freshly
# initialized one does a little worse, since its random logits are confidently wrong here and
# there. One step later, on the same batch, the loss should be lower.

# %%
optimizer = optim.Adam(model.parameters(), lr=1e-3)
logits = model(src, tgt_in)  # 1. forward: (B, T, V)
loss = F.cross_entropy(logits, tgt_out, ignore_index=PAD_ID)  # 2. loss
print(f"loss before: {loss.item():.4f}   (ln V = {math.log(V):.4f})")
optimizer.zero_grad()
loss.backward()  # 3. backward
for name in ("src_tok_emb.weight", "transformer.encoder.layers.0.self_attn.q_proj.weight",
             "transformer.decoder.layers.1.multihead_attn.k_proj.weight", "generator.weight"):
    parameter = dict(model.named_parameters())[name]
    print(f"  {name:58} {str(parameter.shape):10} |grad| = {np.linalg.norm(parameter.grad):.4f}")
norm = optim.clip_grad_norm_(model.parameters(), 1.0)  # 4. clip
optimizer.step()  # 5. update
with nt.no_grad():
    after = F.cross_entropy(model(src, tgt_in), tgt_out, ignore_index=PAD_ID)
print(f"gradient norm {norm:.3f} (clipped to 1); loss after one step: {after.item():.4f}")

# %% [markdown]
# ## Training with the `Trainer`
#
# `Trainer(config, run_dir).train()` repeats that step with a fresh batch each time and adds what
# a real run needs: the warm-up learning-rate schedule of the Transformer paper (up to
# `lr = 2e-3` at step 200, then decaying as $1/\sqrt{\text{step}}$), an evaluation every 100 steps
# (validation loss, and greedy exact match on 200 held-out dates), a checkpoint at each
# evaluation, and at the end beam-search exact match on the 500 held-out examples. The run is a
# pure function of its config: the same seed gives the same numbers.
#
# 600 steps take about half a minute on two CPU cores. `nptransformer train` (see the README)
# trains the same model for the full 1,500 steps in about a minute and a half and reaches about
# 98 % exact match; here we stop well before that, so some errors are left to look at.

# %%
run_dir = os.path.join(tempfile.mkdtemp(prefix="nptransformer-07-"), "dates")
trainer = Trainer(config, run_dir, progress=False)
start = time.perf_counter()
metrics = trainer.train()
print(f"\n{time.perf_counter() - start:.1f} s in all")

# %%
losses, evals = np.array(metrics["losses"]), metrics["evals"]
steps = np.arange(1, len(losses) + 1)
eval_steps = [e["step"] for e in evals]
fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
axes[0].semilogy(steps, losses, color="#aac8eb", lw=0.8, label="training loss (each step)")
axes[0].semilogy(steps, moving_average(losses, 20), color="tab:blue", label="moving average (20 steps)")
axes[0].semilogy(eval_steps, [e["val_loss"] for e in evals], "o", color="tab:red", label="held-out loss")
axes[0].axhline(math.log(V), color="k", ls=":", lw=0.8)
axes[0].annotate("ln V: a uniform guess", (len(losses), math.log(V)), ha="right", va="bottom", fontsize=8)
axes[0].set_ylabel("cross-entropy (nats per character)")
axes[0].legend(fontsize=8, loc="lower left")
axes[1].plot(steps, 1e3 * np.array(metrics["lrs"]), color="tab:green")
axes[1].set_ylabel("learning rate (× 10⁻³)")
axes[1].set_title("warm-up, then 1/√step", fontsize=10)
axes[2].plot(eval_steps, [100 * e["exact_match"] for e in evals], "o-", color="tab:red",
             label="greedy, 200 held-out (during training)")
axes[2].plot([len(losses)], [100 * metrics["exact_match"]], "*", ms=14, color="tab:purple",
             label=f"beam 4, 500 held-out (end): {100 * metrics['exact_match']:.1f} %")
axes[2].set_ylabel("exact match (%)")
axes[2].set_ylim(0, 100)
axes[2].legend(fontsize=8, loc="center right", bbox_to_anchor=(1.0, 0.3))
for ax in axes:
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# The loss falls from around $\ln V \approx 4.2$ nats to a few hundredths. The first steep drop is
# the model learning the *form* of the output (four digits, a dash, two digits, ...), which
# takes away most of the loss and needs no source at all. Exact match lags far behind the loss: an output
# is right only if all ten characters are, so it stays near zero until the per-character errors
# are rare, then climbs fast. The held-out loss follows the training loss closely: with a fresh
# batch every step, the model cannot memorize, and the held-out days are new days, not new
# formats.
#
# The run directory holds what `nptransformer train` writes: the checkpoint (safetensors and
# JSON), `metrics.json`, `loss.png` and `attention.png`. `load_checkpoint` reads it back into a
# model that answers exactly as the one in memory:

# %%
print(sorted(os.listdir(run_dir)))
checkpoint = load_checkpoint(run_dir)
model = checkpoint.build_model()  # the trained weights, in eval mode
heldout = task.heldout  # the 500 held-out (source, target) pairs the trainer evaluated on
sources = [s for s, _ in heldout]
print(f"step {checkpoint.step}: reloaded and in memory translate alike:",
      task.translate(model, sources[:50], 1) == task.translate(trainer.model, sources[:50], 1))

# %% [markdown]
# ## Cross-attention: where each output character looks
#
# `task.attention(model, source, prediction)` runs the model on a source and its output and
# returns the cross-attention weights of the last decoder layer, shape $(H, T, S)$: row $t$ is
# the output character being written (rows read top to bottom as the output is written, ending
# with `<eos>`), column $s$ a source character, and each row sums to 1.
#
# First all four heads, on a held-out date written in digits, day first:

# %%
def held_out(fmt, lower=False, seed=3):
    """A held-out (source, target) pair in format ``fmt``; with ``lower``, one written in lower case."""
    for source, target in date_pairs(20, seed, "heldout", formats=[fmt]):
        if not lower or source == source.lower():
            return source, target
    raise ValueError(f"no lower-case held-out {fmt} example among the first 20")


def show_attention(ax, weights, source, output, title):
    ax.imshow(weights, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(source)), [c.replace(" ", "·") for c in source], fontsize=8)
    ax.set_yticks(range(len(output) + 1), list(output) + ["<eos>"], fontsize=8)
    ax.set_title(title, fontsize=10)


source, target = held_out("european_dots")
prediction = task.translate(model, [source], 4)[0]
weights = task.attention(model, source, prediction)  # (H, T, S)
fig, axes = plt.subplots(1, H, figsize=(14, 3.8), layout="constrained")
for h, ax in enumerate(axes):
    show_attention(ax, weights[h], source, prediction, f"head {h}")
axes[0].set_ylabel(f"output ({'right' if prediction == target else 'WRONG'})")
fig.suptitle(f"{source!r} -> {prediction!r}: cross-attention of the last decoder layer, per head")
plt.show()

# %% [markdown]
# The source is day first and the output year first, so the attention has to **reorder**: the
# year's rows look at the last four source characters, the month's at the middle pair and the
# day's at the first pair. The heads share the work unevenly: some point sharply at the one
# character to copy, others spread over a whole field (which field am I in? what came before?).
# The `<eos>` row has nothing left to read and looks wherever.
#
# Now four formats, averaged over the heads: two written with words, two with digits. (`held_out`
# draws the same held-out day for every format, so the four outputs are the same date.)

# %%
examples = [held_out("ordinal_of_month", lower=True), held_out("long_weekday", lower=True),
            held_out("us_slashes"), held_out("compact")]
fig, axes = plt.subplots(2, 2, figsize=(15, 7.5), gridspec_kw={"width_ratios": [3, 1]}, layout="constrained")
for ax, (source, target) in zip(axes.T.ravel(), examples):
    prediction = task.translate(model, [source], 4)[0]
    mean_weights = task.attention(model, source, prediction).mean(axis=0)  # (T, S), averaged over heads
    show_attention(ax, mean_weights, source, prediction,
                   f"{source!r} -> {prediction!r}" + ("" if prediction == target else f" (WRONG: {target})"))
plt.show()

# %% [markdown]
# In the word formats the year's rows read the end of the source and the day's rows the digits
# of the day, wherever they happen to be: a weekday in front moves them and the attention moves
# with them. The month's two digits are not in the source at all; they have to be *computed*
# from a name, and their rows spread over the letters of the month name (in the weekday format,
# also over look-alike letters of the weekday) instead of pointing at one character.
# `us_slashes` puts the month first and the day second (`3/5/21` is March 5), and its two-digit
# year makes the model choose the century from the last two characters. In `compact` the order
# is already right, and the attention is close to a diagonal.
#
# ## Greedy and beam search
#
# At inference there is no `tgt_in` to read: the decoder starts from `<bos>`, predicts a
# distribution for the first character, picks one, appends it, and runs again. **Greedy search**
# picks the most probable character each time; **beam search** keeps the 4 most probable prefixes
# (notebook 08). `model.generate` does both, for a whole batch of sources at once, with a KV cache.

# %%
targets = [t for _, t in heldout]
outputs = {}
for beam_size in (1, 4):
    start = time.perf_counter()
    outputs[beam_size] = task.translate(model, sources, beam_size)
    right = np.mean([p == t for p, t in zip(outputs[beam_size], targets)])
    print(f"beam size {beam_size}: exact match {100 * right:.1f}% on {len(sources)} held-out dates "
          f"({time.perf_counter() - start:.1f} s)")
print("\nwhere they differ:")
for s, t, g, b in zip(sources, targets, outputs[1], outputs[4]):
    if g != b:
        print(f"  {s!r:30} greedy {g} {'ok' if g == t else 'wrong':5}  beam {b} {'ok' if b == t else 'wrong':5}  (target {t})")

# %% [markdown]
# On this task the two agree almost everywhere: once the model is decent, its distributions are
# sharp, the most probable character is usually far ahead, and greedy already finds the most
# probable output. Beam search pays off where the model hesitates early: the first character of
# a two-digit-year date (`1` or `2`, the century) decides everything after it. The n-best list
# of the beam shows the hesitation. `Seq2SeqScorer` is the scorer `generate` hands to the search
# (notebook 08): it encodes the source once and answers every prefix with next-character
# log-probabilities.

# %%
rescued = [s for s, t, g, b in zip(sources, targets, outputs[1], outputs[4]) if g != t == b]  # beam right, greedy wrong
differ = [s for s, g, b in zip(sources, outputs[1], outputs[4]) if g != b]
source = (rescued or differ or [held_out("us_slashes")[0]])[0]
scorer = Seq2SeqScorer(model, np.array([tokenizer.encode(source)]))
print(f"{source!r}: the beam's four finished outputs")
for tokens, score in beam_search(scorer, BOS_ID, EOS_ID, beam_size=4, max_len=T, n_best=4):  # T = 10 characters + EOS
    print(f"  {tokenizer.decode(tokens)}   log P = {score:7.3f}   P = {math.exp(score):.3f}")

# %% [markdown]
# ## A look at the errors
#
# Exact match hides *how* the model is wrong. First, per format: 40 held-out dates in each.

# %%
per_format = {}
for fmt in DATE_FORMATS:
    pairs = date_pairs(40, seed=7, split="heldout", formats=[fmt])
    predictions = task.translate(model, [s for s, _ in pairs], 4)
    per_format[fmt] = 100 * np.mean([p == t for p, (_, t) in zip(predictions, pairs)])
order = sorted(per_format, key=per_format.get)
fig, ax = plt.subplots(figsize=(8, 4))
ax.barh(range(len(order)), [per_format[f] for f in order], color="tab:blue")
ax.set_yticks(range(len(order)), [f"{f}  ({format_date(day, f)})" if f != "chinese" else f for f in order], fontsize=8)
ax.set_xlabel("exact match on 40 held-out dates (%), beam 4")
ax.set_xlim(0, 100)
ax.grid(axis="x", alpha=0.3)
plt.show()

# %% [markdown]
# (The `chinese` label leaves its example out only because the plot's default font has no CJK
# characters.) Formats that only move digits around are learned first; the ones that need a month
# *name* read, a two-digit year's century decided or a longer source searched lag behind.
#
# Second, which part of the date is wrong, and how. For every wrong output among the 500
# held-out dates, compare the year, the month and the day with the target's; a field counts as
# **swapped** when the output holds the right digits in the wrong order (`2030` for `2003`):
# the model read the right characters and put them in the wrong place, an attention error.

# %%
wrong = [(s, t, p) for s, t, p in zip(sources, targets, outputs[4]) if p != t]
fields = {"year": slice(0, 4), "month": slice(5, 7), "day": slice(8, 10)}
counts = {name: {"swapped digits": 0, "other": 0} for name in fields}
for s, t, p in wrong:
    for name, part in fields.items():
        if p[part] != t[part]:
            counts[name]["swapped digits" if sorted(p[part]) == sorted(t[part]) else "other"] += 1
print(f"{len(wrong)} of {len(sources)} held-out dates wrong:")
for s, t, p in wrong[:12]:
    print(f"  {s!r:32} -> {p!r:14} target {t}")

fig, ax = plt.subplots(figsize=(6, 2.8))
left = np.zeros(len(fields))
for kind, colour in (("swapped digits", "tab:orange"), ("other", "tab:gray")):
    values = [counts[name][kind] for name in fields]
    ax.barh(list(fields), values, left=left, color=colour, label=kind)
    left += values
ax.invert_yaxis()
ax.set_xlabel(f"wrong fields among the {len(wrong)} wrong outputs")
ax.xaxis.set_major_locator(MaxNLocator(integer=True))
ax.legend()
plt.show()

# %% [markdown]
# The day and the year take most of the errors, and many of them are the right digits in the
# wrong order (`12` for `21`, `2030` for `2003`): the model has learned *what* to copy before it
# has learned exactly *where* to copy it from, and the heatmaps above show how spread out some
# of its pointing still is. Among the others are one-digit days copied twice (`1` → `11`) and
# the century of a two-digit year (`83` → `2038`), a computation rather than a copy. Month
# errors are rare: there are only twelve names to learn, and every training batch shows them
# all. Train longer (`nptransformer train`, or exercise 1) and the errors fade.

# %% [markdown]
# ## Exercises
#
# 1. **Finish the run.** `Trainer.resume(run_dir, steps=1500, progress=False).train()` continues
#    this run where it stopped, bit for bit as if it had never paused. Redraw the per-format bars
#    and the error table: which formats and fields are the last to be right?
# 2. **Teacher forcing, measured.** For 200 held-out dates, compute the per-character accuracy of
#    the model when it reads the true `tgt_in` (one forward pass, argmax of the logits) and when
#    it reads its own greedy output. Where is the difference largest, and why is it exactly
#    zero at position 0?
# 3. **Without the causal mask.** Call `model.transformer(...)` directly with
#    `tgt_is_causal=False` on embedded inputs (see the layer-by-layer cell) and train a fresh model
#    that way for 100 steps. Its training loss goes to almost zero. Why, and what does greedy
#    decoding then produce?
# 4. **Count the paper's model.** The base Transformer of "Attention Is All You Need" has
#    $C = 512$, $H = 8$, 6 + 6 layers, feed-forward width 2048 and a shared vocabulary of 37,000
#    tokens with tied embeddings. Count its parameters with the formulas above, and check your count
#    with `nn.Seq2SeqTransformer(...).num_parameters()` (with `tie_weights=True`; the paper also
#    shares the source and target embeddings, so subtract one of them).
# 5. **The first decoder layer.** `task.attention` returns the *last* layer's cross-attention.
#    Get the first layer's by calling `dec_layer.multihead_attn(y, memory, memory,
#    need_weights=True, average_attn_weights=False)` inside the layer-by-layer loop (on the
#    trained model, with `y` the output of that layer's first sub-layer). Is it as sharp?
# 6. **The century.** Among the `us_slashes` held-out dates, plot the error rate against the
#    two-digit year. Where does the model hesitate, and how does that fit the rule 50–99 → 19xx,
#    00–49 → 20xx?
# 7. **Label smoothing.** Train with `TrainConfig(..., label_smoothing=0.1)`. The held-out loss
#    goes *up*; does exact match go down? Explain with notebook 03's label-smoothing section.
