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
# # 08 · Decoding: greedy, beam and exhaustive search, penalties, sampling
#
# *Source: §3.4 "Beam search decoding" (greedy and exhaustive search, beam search, length and
# repetition penalties) and §6.2 "Natural language generation".*
#
# ## What you will learn
#
# - Decoding as **search**: a language model scores one next token at a time, and the most
#   probable *sequence* has to be searched for among $V^n$ of them.
# - **Greedy**, **exhaustive** and **beam search** on a three-token vocabulary where greedy is
#   provably not the best, and a **drawn beam tree** showing what the beam keeps and prunes.
# - **Length penalties** in the three conventions you will meet (Hugging Face, GNMT, fairseq):
#   why raw scores favour short outputs, and at which $\alpha$ the winner changes.
# - The **repetition penalty** (CTRL) and **n-gram blocking** on a model stuck in a loop.
# - **Sampling**: temperature, top-k and top-p (nucleus) as filtered distributions, checked
#   against thousands of draws.
# - A tiny **GPT** trained in seconds on a language whose probabilities we know: why greedy and
#   even beam search miss its most probable sentence, why the most probable *text* is a loop,
#   and how the **KV cache** gives the same tokens for far less work.
#
# Every number of the worked example below is also worked by hand in `docs/decoding.md`.

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np

from nptransformer import functional as F
from nptransformer import nn, optim
from nptransformer.data import END, english_grammar, lm_batches
from nptransformer.decoding import (
    apply_repetition_penalty,
    banned_ngram_tokens,
    beam_search,
    exhaustive_search,
    greedy_search,
    length_normalizer,
    sample,
    top_k_top_p_filter,
)

# %% [markdown]
# ## Decoding is a search
#
# A language model gives, for every prefix $y_{<t}$, a distribution over the next token. By the
# chain rule (notebook 01) a whole output $y = (y_1, \dots, y_n)$ then has probability
#
# $$P(y) = \prod_{t=1}^{n} p(y_t \mid y_{<t}), \qquad \log P(y) = \sum_{t=1}^{n} \log p(y_t \mid y_{<t}),$$
#
# and an output usually ends with a special token, EOS. Finding the most probable output is a
# search over a tree: the root is the empty prefix, every node has $V$ children, and a path that
# reaches EOS is a finished output. With $V = 50{,}000$ and $n = 20$ the tree has $V^n$ leaves,
# so nobody searches all of it.
#
# Every search in `nptransformer.decoding` talks to the model through one function, the
# **scorer**: `log_prob_fn(prefixes)` takes a list of prefixes (each starting with BOS) and
# returns one row of next-token log-probabilities per prefix, an `(n, V)` array. On a real model
# that is one batched forward pass; here, to see every number, it is a table.
#
# The vocabulary is `{a, b, EOS}` (ids 0, 1, 2), BOS is the EOS id (as in fairseq and GPT-2),
# and outputs have at most `max_len = 3` tokens.

# %%
A, B, EOS = 0, 1, 2
BOS = EOS
NAMES = ["a", "b", "EOS"]


def table_scorer(table):
    """The scorer of a table {prefix after BOS (tuple of ids): next-token probabilities}."""

    def log_prob_fn(prefixes):
        with np.errstate(divide="ignore"):  # a probability 0 becomes log 0 = -inf: allowed
            return np.log([table[tuple(p[1:])] for p in prefixes])  # (n, V)

    return log_prob_fn


def log_prob_of(log_prob_fn, tokens):
    """log P(tokens) under a scorer: the chain rule, one prefix at a time."""
    return sum(log_prob_fn([[BOS, *tokens[:t]]])[0][token] for t, token in enumerate(tokens))


def show(tokens):
    return " ".join(NAMES[t] for t in tokens)


# %% [markdown]
# ## Greedy is not the best, and neither is a narrow beam
#
# A table built to mislead. Greedy search takes the most probable token at every step and never
# looks back. Exhaustive search scores every finished output and takes the best: exact, and
# exponential. Beam search keeps the `beam_size` most probable unfinished prefixes at every
# step: in between.

# %%
trap = {
    (): [0.5, 0.4, 0.1],
    (A,): [0.5, 0.4, 0.1],
    (B,): [0.45, 0.4, 0.15],
    (A, A): [0.35, 0.25, 0.4],
    (A, B): [0.25, 0.15, 0.6],
    (B, A): [0.15, 0.1, 0.75],
    (B, B): [0.03, 0.02, 0.95],
}
trap_scorer = table_scorer(trap)
print(f"{'prefix':>8}  {'p(a)':>5} {'p(b)':>5} {'p(EOS)':>6}")
for prefix, row in trap.items():
    print(f"{show(prefix) or '(BOS)':>8}  " + " ".join(f"{p:5.2f}" for p in row))

greedy = greedy_search(trap_scorer, BOS, EOS, max_len=3)
print(f"\n{'greedy':>12}: {show(greedy):10} P = {math.exp(log_prob_of(trap_scorer, greedy)):.3f}")
for beam_size in (2, 3, 4):
    (tokens, score), = beam_search(trap_scorer, BOS, EOS, beam_size, max_len=3)
    print(f"{'beam ' + str(beam_size):>12}: {show(tokens):10} P = {math.exp(score):.3f}")
best, best_score = exhaustive_search(trap_scorer, BOS, EOS, max_len=3)
print(f"{'exhaustive':>12}: {show(best):10} P = {math.exp(best_score):.3f}")

# %% [markdown]
# Greedy takes `a` (0.5 beats 0.4), then `a` again, then EOS: $0.5 \cdot 0.5 \cdot 0.4 = 0.100$.
# The best output starts with the *less* likely `b`: $0.4 \cdot 0.4 \cdot 0.95 = 0.152$.
# Exhaustive search proves it is the best: it scored all of them. A beam of 2 finds
# `a b EOS` (0.120), better than greedy, and each wider beam finds a better output until a beam of
# 4 holds every prefix of length 2 and equals exhaustive search.
#
# ## A drawn beam tree
#
# Why did the beam of 2 miss `b b EOS`? Below, every node of the tree is a prefix with its
# cumulative log-probability $\sum_t \log p(y_t \mid y_{<t})$. The colours come from the search
# itself: a wrapper around the scorer records which prefixes `beam_search` scored at each step
# (the beam), and `n_best` returns the finished outputs it kept. Grey nodes were candidates the
# search ranked out; white, dashed nodes it never saw. The red path is the exhaustive best.

# %%
KIND_STYLE = {
    "beam": dict(facecolor="#d4edda", edgecolor="#28a745"),
    "finished": dict(facecolor="#cce5ff", edgecolor="#004085"),
    "pruned": dict(facecolor="#eeeeee", edgecolor="#999999"),
    "unseen": dict(facecolor="white", edgecolor="#bbbbbb", linestyle="--"),
}


def beam_trace(table, beam_size, max_len):
    """Run beam_search on a table; return every prefix it scored (its beams) and the finished outputs it kept."""
    scorer, scored = table_scorer(table), set()

    def recording_scorer(prefixes):
        scored.update(tuple(p[1:]) for p in prefixes)
        return scorer(prefixes)

    finished = beam_search(recording_scorer, BOS, EOS, beam_size, max_len, n_best=beam_size)
    return scored, {tuple(tokens) for tokens, _ in finished}


def draw_beam_tree(ax, table, beam_size, max_len=3, best=None, title=""):
    """Every prefix of `table` as a node (cumulative log-prob), coloured by what beam_search did."""
    scored, finished = beam_trace(table, beam_size, max_len)
    nodes, edges, leaves = {}, [], []

    def place(prefix, total):  # depth-first: leaves get y = 0, 1, 2, ...; a parent sits at its children's mean
        ends = len(prefix) == max_len or (prefix and prefix[-1] == EOS)
        if ends:
            ys = [len(leaves)]
            leaves.append(prefix)
        else:
            ys = []
            for token, p in enumerate(table[prefix]):
                child = (*prefix, token)
                ys.append(place(child, total + math.log(p)))
                edges.append((prefix, child, p))
        y = float(np.mean(ys))
        nodes[prefix] = (len(prefix), y, total)
        return y

    place((), 0.0)
    on_best = {tuple(best[:k]) for k in range(len(best) + 1)} if best else set()
    for parent, child, p in edges:
        (x0, y0, _), (x1, y1, _) = nodes[parent], nodes[child]
        red = parent in on_best and child in on_best
        ax.plot([x0, x1], [y0, y1], color="tab:red" if red else "#999999", lw=2.5 if red else 0.8, zorder=1)
        ax.text(x0 + 0.62 * (x1 - x0), y0 + 0.62 * (y1 - y0), f"{p:g}", fontsize=7, color="#555555",
                ha="center", va="center", backgroundcolor="white", zorder=2)
    for prefix, (x, y, total) in nodes.items():
        if prefix in finished:
            kind = "finished"
        elif prefix in scored:
            kind = "beam"
        elif prefix[:-1] in scored:
            kind = "pruned"
        else:
            kind = "unseen"
        label = "BOS" if prefix == () else f"{show(prefix)}\n{total:.2f}"
        ax.text(x, y, label, ha="center", va="center", fontsize=8, zorder=3,
                color="#999999" if kind == "unseen" else "black",
                bbox=dict(boxstyle="round,pad=0.3", **KIND_STYLE[kind]))
    for kind, style in KIND_STYLE.items():
        ax.scatter([], [], marker="s", s=80, label=kind, **style)
    ax.plot([], [], color="tab:red", lw=2.5, label="best (exhaustive)")
    ax.legend(loc="upper center", fontsize=8, ncol=5, frameon=False, bbox_to_anchor=(0.5, -0.04))
    ax.set_xlim(-0.3, max_len + 0.3)
    ax.set_ylim(len(leaves) - 0.4, -0.6)
    ax.set_xticks(range(max_len + 1), ["start"] + [f"step {t}" for t in range(1, max_len + 1)])
    ax.tick_params(length=0)
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title)


fig, ax = plt.subplots(figsize=(9, 8))
draw_beam_tree(ax, trap, beam_size=2, best=best, title="the trap, beam_size = 2 (numbers: cumulative log-probability)")
plt.show()

# %% [markdown]
# At step 2 the four prefixes have probabilities `a a` 0.25, `a b` 0.20, `b a` 0.18 and `b b`
# 0.16: the beam of 2 keeps the first two, and `b b`, whose next step is an almost certain EOS,
# is gone for good. Beam search is greedy about *prefixes*: it bets that what looks good early
# stays good. On real models the bet mostly pays, which is why a beam of 4 or 5 is the usual
# choice for translation.
#
# ## Beam search step by step, on the worked example
#
# The table of `docs/decoding.md`, searched with `beam_size = 2` (compare the drawing with the
# doc's tree and its two step tables):

# %%
worked = {
    (): [0.5, 0.4, 0.1],
    (A,): [0.3, 0.15, 0.55],
    (B,): [0.04, 0.9, 0.06],
    (A, A): [0.5, 0.3, 0.2],
    (A, B): [0.1, 0.1, 0.8],
    (B, A): [0.2, 0.3, 0.5],
    (B, B): [0.1, 0.2, 0.7],
}
worked_scorer = table_scorer(worked)
worked_best, _ = exhaustive_search(worked_scorer, BOS, EOS, max_len=3)
for tokens, score in beam_search(worked_scorer, BOS, EOS, beam_size=2, max_len=3, n_best=2):
    print(f"{show(tokens):10} log P = {score:.4f}   P = {math.exp(score):.3f}")

fig, ax = plt.subplots(figsize=(9, 8))
draw_beam_tree(ax, worked, beam_size=2, best=worked_best, title="docs/decoding.md's example, beam_size = 2")
plt.show()

# %% [markdown]
# Step 1: `a` and `b` fill the beam; EOS (0.1) ranks third and is dropped: an EOS candidate
# finishes only when it ranks within the first `beam_size` (Hugging Face's and fairseq's rule).
# Step 2: `b b` (0.36) and `a a` (0.15) form the beam, and `a EOS` (0.275, ranked second)
# finishes. Step 3 is the last, so the candidates it keeps finish by the length limit: `b b EOS`,
# then `a a a` and `b b b` (the doc's tree marks these two "finished (limit)"). Only the
# `beam_size` best finished outputs are kept, though, so those two are dropped again and the
# drawing shows them grey. Here `a EOS` wins, which greedy also finds; the length penalty changes
# that.
#
# ## Length penalty
#
# Each token multiplies the probability by a number below 1, so a raw $\log P$ prefers short
# outputs. Length normalization divides the summed log-probability of a finished output of $n$
# tokens (EOS counted) by a penalty $lp(n)$ that grows with $n$:
#
# | style | $lp(n)$ | note |
# | --- | --- | --- |
# | `"hf"` | $n^\alpha$ | Hugging Face `length_penalty` |
# | `"gnmt"` | $\big((5 + n)/6\big)^\alpha$ | Wu et al. 2016: short outputs barely penalized |
# | `"fairseq"` | $n^\alpha$ | and only EOS is allowed at step `max_len`, so every output pays for its EOS |
#
# $\alpha = 0$ is no normalization (our default), $\alpha = 1$ scores by average log-probability
# per token. Left: the penalties over $n$. Middle and right: the four outputs that reached the
# end above, scored as $\log P / lp(n)$ for every $\alpha$; the winner is the top curve.

# %%
n = np.arange(1, 31)
finished_worked = [(tokens, log_prob_of(worked_scorer, tokens)) for tokens in ([A, EOS], [B, B, EOS], [A, A, A], [B, B, B])]
alphas = np.linspace(0, 1.5, 151)
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
for alpha, color in ((0.6, "tab:blue"), (1.0, "tab:orange")):
    axes[0].plot(n, [length_normalizer(k, alpha, "hf") for k in n], color=color, label=f"hf / fairseq, α = {alpha}")
    axes[0].plot(n, [length_normalizer(k, alpha, "gnmt") for k in n], color=color, ls="--", label=f"gnmt, α = {alpha}")
axes[0].set_xlabel("output length n (EOS counted)")
axes[0].set_ylabel("lp(n): the score is divided by it")
axes[0].legend()
crossings = {}
(_, logp_short), (_, logp_long) = finished_worked[:2]
for ax, style in zip(axes[1:], ("hf", "gnmt")):
    for (tokens, logp), color in zip(finished_worked, ("tab:green", "tab:red", "0.6", "0.8")):
        ax.plot(alphas, [logp / length_normalizer(len(tokens), a, style) for a in alphas], color=color, label=show(tokens))
    # 'a EOS' (n = 2) and 'b b EOS' (n = 3) tie where logp_short / lp(2) = logp_long / lp(3): solve for alpha
    crossings[style] = math.log(logp_long / logp_short) / math.log(length_normalizer(3, 1, style) / length_normalizer(2, 1, style))
    ax.axvline(crossings[style], color="k", lw=0.8, ls=":")
    ax.annotate(f"α* = {crossings[style]:.2f}", (crossings[style], -2.6), xytext=(6, 0), textcoords="offset points")
    ax.set_title(f"style {style!r}: log P / lp(n)")
    ax.set_xlabel("α")
    ax.set_ylim(-2.7, -0.2)
    ax.legend(loc="upper left", fontsize=8)
plt.show()

# %% [markdown]
# The winner changes where the two curves cross: $\log P_1 / lp(2) = \log P_2 / lp(3)$, and
# since both penalties are a base raised to $\alpha$,
# $\alpha^* = \ln(\log P_2 / \log P_1) \,/\, \ln\big(lp_{\alpha=1}(3) / lp_{\alpha=1}(2)\big)$:
# 0.16 for `"hf"` (ratio $3/2$) and 0.49 for `"gnmt"` (ratio $8/7$: it barely penalizes short
# outputs). So a small $\alpha$ is not enough to flip it. The searches agree with the picture, and
# beam search with exhaustive search:

# %%
print(f"{'style':>7} {'α':>5}  {'beam 2':12} {'score':>8}  exhaustive")
for style in ("hf", "gnmt"):
    for alpha in (0.0, 0.1, 0.3, 0.6, 1.0):
        (tokens, score), = beam_search(worked_scorer, BOS, EOS, 2, 3, length_penalty=alpha, length_penalty_style=style)
        exact, _ = exhaustive_search(worked_scorer, BOS, EOS, 3, length_penalty=alpha, length_penalty_style=style)
        print(f"{style:>7} {alpha:5.1f}  {show(tokens):12} {score:8.4f}  {show(exact)}")

# %% [markdown]
# **fairseq at the length limit.** fairseq never lets an output end without EOS: at its last step
# every other token gets $-\infty$. With a strong length preference ($\alpha = 3$) the runner-up
# shows it: `"hf"` keeps `a a a`, cut by the limit; `"fairseq"` must end that path with EOS and
# pays for it.

# %%
for style in ("hf", "fairseq"):
    hyps = beam_search(worked_scorer, BOS, EOS, 2, 3, length_penalty=3.0, length_penalty_style=style, n_best=2)
    print(f"{style:>8}: " + ",   ".join(f"{show(tokens)} {score:.4f}" for tokens, score in hyps))

# %% [markdown]
# ## Repetition penalty
#
# CTRL's penalty (Keskar et al. 2019), as Hugging Face applies it: for every distinct token
# already generated, its logit is divided by $\theta$ when positive and multiplied by $\theta$
# when negative. `apply_repetition_penalty` on the logits $(2, -1, 0.5, 3)$ after tokens
# `[0, 1, 1]` with $\theta = 2$: token 0 goes $2 \to 1$, token 1 goes $-1 \to -2$ (once, although
# it came twice), the others stay.

# %%
print(apply_repetition_penalty([2, -1, 0.5, 3], [0, 1, 1], 2))


def softmax(x):
    e = np.exp(x - np.max(x))
    return e / e.sum()


for logits in ([1.0, 2.0, 3.0], [-2.0, -1.0, 0.0]):  # the same distribution, shifted
    penalized = apply_repetition_penalty(logits, [0], 2)  # token 0 was generated
    print(f"logits {logits}: p = {np.round(softmax(logits), 3)}  ->  penalized p = {np.round(softmax(penalized), 3)}")

# %% [markdown]
# The rule is not shift-invariant: two sets of logits with the same softmax are penalized
# differently. On log-probabilities, all $\le 0$, it always multiplies: $\log p \to \theta \log
# p$, i.e. $p \to p^\theta$, a well-defined operation on the distribution. That is how the beam
# search here applies it, and then it re-normalizes the row. The row after `b b` in the worked
# example, with $\theta = 2$ (`b` was generated; `docs/decoding.md` has the same numbers):

# %%
row = np.log(worked[(B, B)])
penalized = apply_repetition_penalty(row, [B, B], 2.0)
print("p           :", np.round(np.exp(row), 4))
print("p ** θ, norm:", np.round(np.exp(penalized) / np.exp(penalized).sum(), 4))
for tokens, score in beam_search(worked_scorer, BOS, EOS, 2, 3, repetition_penalty=2.0, n_best=2):
    print(f"beam 2, θ = 2: {show(tokens):8} P = {math.exp(score):.4f}")

# %% [markdown]
# ### A model stuck in a loop
#
# Real models, decoded greedily, love to repeat themselves. A bigram table that does the same:
# after "on" comes "the", after "the" comes "cat" (0.55) or "mat" (0.35), and "the cat sat on"
# leads back to "the". Greedy decoding never leaves the loop.

# %%
WORDS = ["the", "cat", "sat", "on", "mat", ".", "<eos>"]
W_EOS = len(WORDS) - 1
bigram = {  # last word -> next-word probabilities; <eos> (also BOS) starts a sentence
    "<eos>": [0.90, 0.02, 0.02, 0.02, 0.02, 0.01, 0.01],
    "the": [0.02, 0.55, 0.02, 0.02, 0.35, 0.02, 0.02],
    "cat": [0.02, 0.02, 0.90, 0.02, 0.02, 0.01, 0.01],
    "sat": [0.02, 0.02, 0.02, 0.90, 0.02, 0.01, 0.01],
    "on": [0.90, 0.02, 0.02, 0.02, 0.02, 0.01, 0.01],
    "mat": [0.02, 0.02, 0.02, 0.02, 0.02, 0.85, 0.05],
    ".": [0.02, 0.01, 0.01, 0.01, 0.01, 0.02, 0.92],
}


def bigram_scorer(prefixes):
    return np.log([bigram[WORDS[p[-1]]] for p in prefixes])  # (n, V): only the last token matters


def words(tokens):
    return " ".join(WORDS[t] for t in tokens)


print("greedy:", words(greedy_search(bigram_scorer, W_EOS, W_EOS, max_len=16)))
for theta in (1.5, 1.7, 1.8, 3.0):
    (tokens, _), = beam_search(bigram_scorer, W_EOS, W_EOS, beam_size=1, max_len=16, repetition_penalty=theta)
    print(f"θ = {theta}: {words(tokens)}")

# %% [markdown]
# With one beam, `beam_search` is greedy search with the penalties (that is what `GPT.generate`
# runs when you pass a penalty). The decision happens after the second "the": "cat" was
# generated, "mat" was not, so "cat" drops from 0.55 to about $0.55^\theta$ (re-normalized) while
# "mat" keeps 0.35. The loop breaks when $0.55^\theta < 0.35$, i.e.
# $\theta > \ln 0.35 / \ln 0.55 \approx 1.756$. Notice what else is penalized: "the" must come
# twice in this sentence, and it only survives because nothing else is likely after "on".

# %%
context = [WORDS.index(w) for w in "the cat sat on the".split()]
fig, ax = plt.subplots(figsize=(8, 3.2))
thetas = (1.0, 1.5, 2.0, 3.0)
for i, theta in enumerate(thetas):
    logp = apply_repetition_penalty(np.log(bigram["the"]), context, theta)
    ax.bar(np.arange(len(WORDS)) + (i - 1.5) * 0.2, np.exp(logp) / np.exp(logp).sum(), width=0.2, label=f"θ = {theta}")
ax.set_xticks(range(len(WORDS)), [w + (" (seen)" if WORDS.index(w) in context else "") for w in WORDS])
ax.set_ylabel("next-token probability")
ax.set_title('after "the cat sat on the": penalized and re-normalized')
ax.legend()
plt.show()

# %% [markdown]
# ## N-gram blocking
#
# `no_repeat_ngram_size = N` forbids (gives $-\infty$ to) every token that would complete an
# $N$-gram already present in the output: after `1 2 3 1 2` with $N = 3$, the context `(1, 2)`
# was followed by `3` before, so `3` is banned.

# %%
print("banned after [1, 2, 3, 1, 2], N = 3:", banned_ngram_tokens([1, 2, 3, 1, 2], 3))
for size in (1, 2, 3):
    (tokens, _), = beam_search(bigram_scorer, W_EOS, W_EOS, beam_size=1, max_len=16, no_repeat_ngram_size=size)
    print(f"no_repeat_ngram_size = {size}: {words(tokens)}")

# %% [markdown]
# $N = 2$ is just right for this loop: "the cat" may not come twice, so the second "the" is
# followed by "mat". $N = 1$ forbids any word twice, even "the". $N = 3$ lets "the cat" repeat
# and blocks "the cat sat", so the loop goes on in another shape. The blunt instrument has to be
# fitted to the text: summaries use $N = 3$, while a text that must repeat a name cannot.
#
# ## Sampling
#
# Search looks for the most probable output; sampling draws one at random, so that the same
# prompt gives varied outputs. Each step of `sample`, in Hugging Face's order:
#
# 1. **temperature** $T$: divide the log-probabilities by $T$, so $p \to p^{1/T}$ re-normalized:
#    $T < 1$ sharpens, $T > 1$ flattens;
# 2. **top-k**: keep the $k$ most probable tokens;
# 3. **top-p** (nucleus): keep the fewest most probable tokens whose probabilities sum to at
#    least $p$;
# 4. re-normalize and draw.
#
# The example of `docs/decoding.md`, $p = (0.5, 0.25, 0.15, 0.07, 0.03)$. Bars: the distribution
# after the filter (`top_k_top_p_filter`); dots: how often `sample` drew each token in 4,000
# one-token samples.

# %%
p = np.array([0.5, 0.25, 0.15, 0.07, 0.03])
one_step = lambda prefixes: np.log(np.tile(p, (len(prefixes), 1)))  # the same row after every prefix
settings = {"T = 1": {}, "T = 0.5": {"temperature": 0.5}, "T = 2": {"temperature": 2.0},
            "top_k = 2": {"top_k": 2}, "top_p = 0.8": {"top_p": 0.8}}
DRAWS = 4000
rng = np.random.default_rng(0)
fig, axes = plt.subplots(1, len(settings), figsize=(14, 3), sharey=True)
for ax, (name, kwargs) in zip(axes, settings.items()):
    filtered = top_k_top_p_filter(np.log(p) / kwargs.get("temperature", 1.0), kwargs.get("top_k", 0), kwargs.get("top_p", 1.0))
    exact = np.exp(filtered) / np.exp(filtered).sum()
    draws = [sample(one_step, 0, 4, max_len=1, seed=rng, **kwargs)[0] for _ in range(DRAWS)]
    ax.bar(range(5), p, fill=False, edgecolor="0.5", ls="--", label="original p")
    ax.bar(range(5), exact, color="tab:blue", alpha=0.6, label="filtered p")
    ax.plot(range(5), np.bincount(draws, minlength=5) / DRAWS, "ko", ms=4, label=f"{DRAWS} draws")
    ax.set_title(name)
    ax.set_xticks(range(5))
    ax.set_xlabel("token")
axes[0].set_ylabel("probability")
axes[0].legend(fontsize=8)
plt.show()

# %% [markdown]
# $T = 2$ draws with probabilities $\propto \sqrt{p}$; top-k with $k = 2$ renormalizes
# $(0.5, 0.25)$ to $(2/3, 1/3)$; top-p 0.8 keeps three tokens ($0.5 + 0.25 = 0.75 < 0.8$) and
# draws them with $(0.5, 0.25, 0.15)/0.9$. Top-k keeps a fixed number of tokens whatever the
# shape of the distribution; top-p keeps few where the model is sure and many where it is not.
#
# ## A tiny GPT, decoded
#
# Now a real model. We train a GPT (`nn.GPT`: two pre-LN blocks, width 48) on the stream of
# sentences of notebook 01's grammar, each ended by `<eos>`. Because the grammar gives the exact
# probability of every sentence, we can judge every decoded output by its *true* probability.

# %%
grammar = english_grammar()
tokenizer = grammar.tokenizer()
stream = grammar.encode(grammar.sample(3000, seed=0), tokenizer)  # sentences, each ended by <eos>
CONTEXT, STEPS = 64, 300

nn.manual_seed(0)
gpt = nn.GPT(tokenizer.vocab_size, d_model=48, n_layers=2, n_heads=2, max_len=CONTEXT)
optimizer = optim.AdamW(gpt.parameters(), lr=1e-2, weight_decay=0.0)
schedule = optim.WarmupCosine(optimizer, warmup_steps=20, total_steps=STEPS)
losses = []
start = time.perf_counter()
for x, y in lm_batches(stream, batch_size=16, context=CONTEXT, seed=0, num_batches=STEPS):
    loss = F.cross_entropy(gpt(x).reshape(-1, tokenizer.vocab_size), y.reshape(-1))  # (B*T, V) vs (B*T,)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.step()
    losses.append(loss.item())
entropy = grammar.entropy_per_token()
print(f"{STEPS} steps in {time.perf_counter() - start:.1f} s; loss over the last 20: {np.mean(losses[-20:]):.3f} nats, "
      f"the language's entropy (the floor): {entropy:.3f}")

fig, ax = plt.subplots(figsize=(6, 2.8))
ax.plot(losses, label="training loss")
ax.axhline(entropy, color="k", ls="--", label="entropy")
ax.set_xlabel("step")
ax.set_ylabel("nats per token")
ax.set_ylim(1, 3.5)
ax.legend()
plt.show()

# %% [markdown]
# ### The most probable sentence
#
# Which sentence is the most probable? Four tie: "alice sleeps .", "alice runs .", "bob sleeps ."
# and "bob runs .", each $0.15 \cdot 0.2 \cdot 0.6 = 0.018$ (the grammar of notebook 01 is
# printed in `nptransformer/data/grammar.py`). Greedy cannot find them: its first word is "the"
# (0.35 beats 0.15), and no sentence that starts with "the" reaches more than
# $0.35 \cdot 0.2 \cdot 0.2 \cdot 0.6 = 0.0084$ ("the cat sleeps ."). A beam must
# keep "alice sleeps" alive at step 2 against the many "the …" and "a …" prefixes that are more
# probable so far, so it has to be wide.
# `GPT.generate` continues a prompt. Ours is one sentence and its `<eos>`, so the model goes on
# with a new sentence; at most `NEW` tokens fit after it in the model's 64 positions.

# %%
prompt = grammar.encode([["bob", "runs", ".", END]], tokenizer).tolist()  # ids of "bob runs . <eos>"
NEW = CONTEXT - len(prompt)


def sentence_of(ids):
    return [tokenizer.id_to_token(i) for i in ids if i != tokenizer.eos_id]


for beam_size in (1, 4, 16):
    ids = gpt.generate(prompt, 20, eos_id=tokenizer.eos_id, beam_size=beam_size)
    sentence = sentence_of(ids)
    print(f"beam {beam_size:2d}: {' '.join(sentence):28} true P = {math.exp(grammar.log_prob(sentence + [END])):.5f}")
print(f"the mode: {'alice sleeps .':>22} true P = {math.exp(grammar.log_prob('alice sleeps . ' + END)):.5f}")

# %% [markdown]
# ### The most probable text is a loop
#
# Without an EOS to stop at, greedy decoding writes the stream on and on. Since sentences are
# independent here, the most probable continuation after a sentence ends is the most probable
# sentence again, and greedy repeats its choice forever. That is the *likelihood trap*: the
# single most probable text is rarely what anyone wants to read. The penalties break the loop;
# sampling gives variety.

# %%
for name, kwargs in (("greedy", {}), ("repetition_penalty = 1.5", {"repetition_penalty": 1.5}),
                     ("no_repeat_ngram_size = 4", {"no_repeat_ngram_size": 4}),
                     ("sampling, T = 1", {"do_sample": True, "seed": 0})):
    text = tokenizer.decode(gpt.generate(prompt, 40, **kwargs), skip_special=False)
    print(f"{name}:\n   {text}")

# %% [markdown]
# The penalized texts stay grammatical although "." and `<eos>` come back in every sentence: on
# log-probabilities the penalty turns $p$ into $p^\theta$, which leaves a token the model is
# sure of almost untouched ($1^\theta = 1$: `<eos>` after "." keeps all its probability).
#
# How good are the samples? For a few settings, we draw some 70 sentences each and ask the
# grammar two questions: is the sentence possible at all (the share it accepts), and how
# surprising is it on average ($-\log P$ under the grammar, over the accepted ones)? At $T = 1$ a
# perfect model's samples average the grammar's sentence entropy (dashed) in the long run; 70
# sentences fall short of it, because the rare long sentences carry much of the surprise.

# %%
def sampled_sentences(seeds, **kwargs):
    sentences = []
    for seed in seeds:
        ids = gpt.generate(prompt, NEW, do_sample=True, seed=seed, **kwargs)
        text = " ".join(tokenizer.id_to_token(i) for i in ids)
        sentences += [s.split() + [END] for s in text.split("<eos>")[:-1]]  # complete sentences only
    return sentences


sampling = {"T = 0.7": {"temperature": 0.7}, "T = 1": {}, "T = 1.5": {"temperature": 1.5},
            "T = 1.5, top-k 3": {"temperature": 1.5, "top_k": 3}, "T = 1.5, top-p 0.8": {"temperature": 1.5, "top_p": 0.8}}
accepted, surprise = [], []
for name, kwargs in sampling.items():
    log_probs = np.array([grammar.log_prob(s) for s in sampled_sentences(range(10), **kwargs)])
    ok = np.isfinite(log_probs)
    accepted.append(100 * ok.mean())
    surprise.append(-log_probs[ok].mean())
    print(f"{name:>18}: {len(log_probs)} sentences, {accepted[-1]:3.0f}% possible, mean -log P = {surprise[-1]:.2f} nats")

fig, axes = plt.subplots(1, 2, figsize=(12, 2.8), sharey=True)
y = np.arange(len(sampling))[::-1]
axes[0].barh(y, accepted, color="tab:blue")
axes[0].set_xlabel("% of sentences the grammar accepts")
axes[0].set_yticks(y, list(sampling))
axes[1].barh(y, surprise, color="tab:orange")
axes[1].axvline(grammar.sentence_entropy(), color="k", ls="--", label="sentence entropy")
axes[1].set_xlabel("mean -log P of the accepted sentences (nats)")
axes[1].set_xlim(0, 18)
axes[1].legend(loc="upper right")
plt.show()

# %% [markdown]
# Raising the temperature makes the samples more varied (more surprising) and more often wrong:
# it lifts the unlikely tail, where the model's mistakes live. Lowering it does the opposite and
# drifts toward the bland, probable sentences that search finds. Top-k and top-p cut the tail
# off instead of lowering it: at $T = 1.5$ they remove (here) every mistake, and top-p, which
# keeps many tokens where the model is unsure, keeps more of the variety than top-k.

# %% [markdown]
# ## The KV cache: same tokens, less work
#
# Without a cache, each step runs the model on the whole prefix again: step $t$ computes $t$
# positions, a generation of $N$ tokens about $N^2/2$. But the keys and values of the earlier
# positions do not change (attention is causal), so a cache keeps them and each step runs the
# model on the one new token (`nn.KVCache`, used by `generate` unless `use_cache=False`). The
# output must be the same, token for token:

# %%
for name, kwargs in (("greedy", {}), ("beam search, 4 beams", {"beam_size": 4}),
                     ("sampling", {"do_sample": True, "seed": 1})):
    with_cache = gpt.generate(prompt, NEW, use_cache=True, **kwargs)
    without = gpt.generate(prompt, NEW, use_cache=False, **kwargs)
    print(f"{name:>21}: {len(with_cache)} tokens, the same with and without the cache: {with_cache == without}")

# %% [markdown]
# On our tiny model a forward pass costs about the same for 1 position as for 64: the time goes
# to Python, not to arithmetic, so the cache saves little. To see what it saves, time a wider GPT
# (width 256, 256 positions; untrained, since its weights do not matter for the timing):

# %%
nn.manual_seed(1)
wide = nn.GPT(tokenizer.vocab_size, d_model=256, n_layers=2, n_heads=4, max_len=256)


def seconds_to_generate(n_tokens, use_cache):
    start = time.perf_counter()
    wide.generate(prompt, n_tokens, use_cache=use_cache)
    return time.perf_counter() - start


lengths = [25, 50, 100, 200]
times = {use_cache: [seconds_to_generate(k, use_cache) for k in lengths] for use_cache in (True, False)}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
p0 = len(prompt)
axes[0].plot(lengths, [sum(range(p0, p0 + k)) for k in lengths], "o-", color="tab:red", label="without cache: ≈ N²/2")
axes[0].plot(lengths, [p0 + k - 1 for k in lengths], "o-", color="tab:green", label="with cache: ≈ N")
axes[0].set_ylabel("positions run through the model")
axes[1].plot(lengths, times[False], "o-", color="tab:red", label="without cache")
axes[1].plot(lengths, times[True], "o-", color="tab:green", label="with cache")
axes[1].set_ylabel("seconds")
for ax in axes:
    ax.set_xlabel("new tokens N")
    ax.legend()
plt.show()
print(f"{lengths[-1]} tokens: {times[True][-1]:.2f} s with the cache, {times[False][-1]:.2f} s without")

# %% [markdown]
# The cache turns the quadratic count of positions into a linear one, and the time follows once
# the arithmetic outweighs Python's overhead (each step still pays that overhead, so the measured
# gap is smaller than the count's). Beam search uses the same cache: the scorer gathers the cache
# rows of the beams that survive each step into their new order
# (`nptransformer/decoding/generate.py`).

# %% [markdown]
# ## Exercises
#
# 1. **GNMT by hand.** Write $lp(n) = ((5 + n)/6)^\alpha$ yourself, compare it with
#    `length_normalizer(n, alpha, "gnmt")` for $n = 1 \dots 50$, and recompute the crossing
#    $\alpha^* \approx 0.49$ of the worked example by bisection on your own function.
# 2. **A wider beam can do worse.** Beam search is not monotone in its width. Find a table (same
#    vocabulary, `max_len = 3`) where `beam_search(..., beam_size=2)` returns a *less* probable
#    output than greedy search. Hint: at step 2, let the second beam's children crowd out the
#    greedy path's continuation. Draw it with `draw_beam_tree`.
# 3. **How wide?** For the GPT, find the smallest beam that returns a sentence of probability
#    0.018. Explain the number from the grammar's probabilities of the prefixes at step 2.
# 4. **The mode, proved.** Show that no sentence of the grammar is more probable than
#    "alice sleeps ." (0.018). Hint: a sentence's probability is at most the product of its first
#    few factors; bound it separately for sentences that start with a name and with a determiner.
# 5. **Where the penalty does nothing.** Logits $(-2, -1, 0)$ with token 2 already generated:
#    what does `apply_repetition_penalty` do to token 2 for any $\theta$, and why? What does it
#    do on log-probabilities instead?
# 6. **Nucleus by hand.** Write top-p filtering in a few lines of NumPy (sort, cumulative sum,
#    keep while the mass *above* a token is below $p$) and compare it with
#    `top_k_top_p_filter(x, top_p=p)` on 1,000 random rows, including rows with ties.
# 7. **Count the cache's savings.** With `use_cache=False`, a beam search of width $k$ for $N$
#    steps runs about how many positions through the model? And with the cache? Measure both
#    with `gpt.generate(prompt, 40, beam_size=4, use_cache=...)`.
