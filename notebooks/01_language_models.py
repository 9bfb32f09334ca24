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
# # 01 · Language models: from counting to neural networks
#
# *Source: §2.1 "Language models" (definition, statistical and neural language models) and §4.1
# "The probability formula of a language model".*
#
# ## What you will learn
#
# - The **chain rule**: the probability of a sentence is a product of next-word probabilities,
#   $P(w_1, \dots, w_n) = \prod_i P(w_i \mid w_1, \dots, w_{i-1})$, exactly, with no assumption.
# - **Log-likelihood**, **cross-entropy** and **perplexity**: three views of one number, and why
#   training a language model means maximizing the first.
# - Why a language whose **entropy** we know exactly turns "is my loss good?" into a question with
#   an answer: no model can go below the entropy.
# - **n-gram models** (counting, add-k and Kneser-Ney smoothing) and where they stop improving.
# - A **neural n-gram model** (Bengio et al., 2003) built from `Embedding`, `Linear` and `tanh`,
#   trained in a few seconds, beating every n-gram on the same data.

# %%
import inspect
import math

import matplotlib.pyplot as plt
import numpy as np

from nptransformer import nn, optim
from nptransformer.data import END, english_grammar
from nptransformer.lm import NeuralNGramLM, NGramLM, WordVocabulary

# %% [markdown]
# ## A language whose entropy we know
#
# On real text nobody knows the best possible loss, so "my model reaches 1.9 nats per token" means
# little. We use a small synthetic language instead: `english_grammar()` is a probabilistic
# finite-state grammar. Every sentence is a walk through its states; every step picks a word with
# a known probability. So we know the exact probability of every sentence, and the exact entropy
# of the language.

# %%
grammar = english_grammar()
for sentence in grammar.sample(5, seed=0):
    print(" ".join(sentence))
print(f"\n{len(grammar.words)} words, a sentence has {grammar.expected_length():.2f} tokens on average ({END} included)")

# %% [markdown]
# ## The chain rule
#
# Any joint probability factors into conditionals, one word at a time:
#
# $$P(w_1, w_2, \dots, w_n) = \prod_{i=1}^{n} P(w_i \mid w_1, \dots, w_{i-1}).$$
#
# This is not an approximation; it is the definition of conditional probability applied $n$
# times. A language model is a machine for the conditionals: given the words so far, a
# distribution over the next one. Here the grammar gives them to us: the state after the first
# $i - 1$ words decides $P(w_i \mid w_{<i})$. Let us walk one sentence.

# %%
sentence = grammar.sample(1, seed=3)[0]
state, total = grammar.start, 0.0
print(f"{'word':>8}  {'state before':>13}  P(word | history)")
for word in sentence:
    prob, next_state = grammar.rules[state][word]
    total += math.log(prob)
    print(f"{word:>8}  {state:>13}  {prob:.2f}")
    state = next_state
print(f"\nsum of log P = {total:.4f};  grammar.log_prob(sentence) = {grammar.log_prob(sentence):.4f}")

# %% [markdown]
# ## Log-likelihood, cross-entropy, perplexity
#
# A model with parameters $\theta$ gives every word of a text a probability. The
# **log-likelihood** of the text is the sum of their logs (§4.1 of the source):
#
# $$\mathcal{L}(\theta) = \sum_{i=1}^{n} \log P(w_i \mid w_1, \dots, w_{i-1}; \theta).$$
#
# Training maximizes it. Divided by $-n$ it becomes the **cross-entropy** per token, the loss
# every language model reports: $H(p, q) = -\frac{1}{n}\sum_i \log q(w_i \mid w_{<i})$, where the
# text comes from the true distribution $p$ and $q$ is the model. Gibbs' inequality says
# $H(p, q) \ge H(p)$, the **entropy** of the language, with equality only when $q = p$. So the
# entropy is the floor of the loss.
#
# **Perplexity** is $e^{H}$ (or $2^{H}$ with $H$ in bits): the size of a uniform choice that is
# as hard as the model's average guess. A perplexity of 3.7 means "as unsure as choosing
# between 3.7 equally likely words".
#
# For our grammar the entropy per token is known exactly (the module docstring of
# `nptransformer.data.grammar` shows how: two linear systems over the states).

# %%
H_bits = grammar.entropy_per_token("bits")
print(f"entropy per token: {grammar.entropy_per_token('nats'):.4f} nats = {H_bits:.4f} bits")
print(f"lowest possible perplexity: {grammar.perplexity():.3f}")

# %% [markdown]
# The entropy is an average over infinitely many sentences. On a finite sample, the grammar's own
# average $-\log_2 P$ per token wanders around it and settles as the sample grows:

# %%
sample = grammar.sample(4000, seed=1)
bits = np.cumsum([-grammar.log_prob(s) / math.log(2) for s in sample])
tokens = np.cumsum([len(s) for s in sample])
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(tokens, bits / tokens, label="grammar's own $-\\log_2 P$ per token, running average")
ax.axhline(H_bits, color="k", ls="--", label=f"exact entropy {H_bits:.3f} bits")
ax.set_xscale("log")
ax.set_xlabel("tokens seen")
ax.set_ylabel("bits per token")
ax.legend()
plt.show()

# %% [markdown]
# ## n-gram models: counting
#
# An n-gram model makes one assumption, the Markov assumption: only the last $n - 1$ words
# matter, $P(w_i \mid w_{<i}) \approx P(w_i \mid w_{i-n+1}, \dots, w_{i-1})$. Then the
# conditionals can be counted: $P(w \mid h) = c(h, w) / c(h)$. Counting alone gives probability
# 0 to anything unseen (and a test loss of infinity), so every practical n-gram model
# **smooths**: add-k adds $k$ to every count; Kneser-Ney subtracts a discount from seen counts
# and gives the mass to a lower-order model that counts in how many different contexts a word
# appears. (`nptransformer.lm.NGramLM` documents both formulas.)
#
# We train on 20,000 sampled sentences and measure on 1,000 others. `NGramLM` adds the end of
# sentence itself, so we strip the grammar's `</s>`; both count it as one predicted token, so the
# numbers compare directly with the entropy.

# %%
train = grammar.sample(20000, seed=1)
test = grammar.sample(1000, seed=2)
train_words = [s[:-1] for s in train]  # NGramLM adds </s> itself
test_words = [s[:-1] for s in test]

ngram_bits = {}
for n in range(1, 6):
    for smoothing in ("add-k", "kneser-ney"):
        lm = NGramLM(n, smoothing=smoothing, k=0.1).fit(train_words)
        ngram_bits[n, smoothing] = math.log2(lm.perplexity(test_words))
oracle_bits = -sum(grammar.log_prob(s) for s in test) / sum(len(s) for s in test) / math.log(2)
for (n, smoothing), b in ngram_bits.items():
    print(f"{n}-gram {smoothing:>10}: {b:.3f} bits/token (perplexity {2 ** b:.2f})")
print(f"the grammar itself on these test sentences: {oracle_bits:.3f} bits/token")

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
orders = np.arange(1, 6)
for shift, smoothing in ((-0.2, "add-k"), (0.2, "kneser-ney")):
    ax.bar(orders + shift, [ngram_bits[n, smoothing] for n in orders], width=0.4, label=smoothing)
ax.axhline(H_bits, color="k", ls="--", label="entropy (the floor)")
ax.set_xticks(orders, [f"{n}-gram" for n in orders])
ax.set_ylabel("test bits per token")
ax.set_ylim(1.5, 4.5)
ax.legend()
plt.show()

# %% [markdown]
# Longer histories help, up to a point: a 5-gram has far more histories than 20,000 sentences
# can fill, so many are seen once or never. Add-k then spreads too much mass over impossible
# words; Kneser-Ney backs off to shorter histories and holds on. Either way the models stall
# above the floor, because a count for "the big" learns nothing about "a big": every history is
# its own island.

# %% [markdown]
# ## A neural n-gram model
#
# Bengio et al. (2003) kept the n-gram's fixed window but replaced the table of counts with a
# function that can generalize:
#
# 1. each of the last $n-1$ words becomes a learned vector (an `Embedding` row), and the vectors
#    are concatenated;
# 2. a hidden layer `Linear` + `tanh` mixes them;
# 3. a `Linear` layer gives one score (logit) per vocabulary word, and the softmax turns the
#    scores into $P(w \mid h)$.
#
# Words used in similar places ("cat", "dog") end up with similar vectors, so what is learned
# about one history carries over to similar ones. (The vectors start small, with standard
# deviation 0.1, so that what training writes into them is not drowned by the random start.)
# `nptransformer.lm.NeuralNGramLM` is that model, assembled from the package's layers; here is its
# whole forward pass. It follows the n-gram convention above (n - 1 `<s>` before each sentence,
# `</s>` predicted, unseen words read as `<unk>`), so its perplexity compares directly with the
# n-grams'. The loss is `F.cross_entropy` (log-softmax and the negative log-likelihood in one op),
# the optimizer `optim.AdamW` with a warm-up and cosine schedule.

# %%
print(inspect.getsource(NeuralNGramLM.forward))

# %%
N = 5  # the model sees the last 4 words, like the 5-gram
vocab = WordVocabulary.from_sentences(train_words)  # the n-grams' vocabulary: training words, </s>, <unk>
x_train, y_train = NeuralNGramLM(vocab, N).windows(train_words)  # every (last 4 ids, next id) pair
print(f"{len(x_train)} training windows, V = {vocab.size}; the first sentence gives:")
for context, target in zip(x_train[:4], y_train[:4]):
    words = ["<s>" if i == vocab.bos_id else vocab.words[i] for i in context]
    print(f"   {' '.join(words):>30}  ->  {vocab.words[target]}")

# %%
nn.manual_seed(0)
model = NeuralNGramLM(vocab, N, embed_dim=16, hidden=64)
print(model, f"\n{model.num_parameters()} parameters")
STEPS, BATCH = 2000, 256
optimizer = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
schedule = optim.WarmupCosine(optimizer, warmup_steps=100, total_steps=STEPS)
rng = np.random.default_rng(0)
curve = []
for step in range(1, STEPS + 1):
    batch = rng.integers(0, len(x_train), BATCH)
    loss = model.loss(x_train[batch], y_train[batch])  # mean -log P over the batch, in nats
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.step()
    if step % 100 == 0:
        curve.append((step, loss.item() / math.log(2), math.log2(model.perplexity(test_words))))
neural_bits = curve[-1][2]
print(f"neural {N}-gram: {neural_bits:.3f} bits/token on the test sentences (perplexity {2 ** neural_bits:.2f})")

# %%
steps, train_curve, test_curve = zip(*curve)
best_ngram = min(ngram_bits.values())
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.plot(steps, train_curve, alpha=0.5, label="training batch")
ax.plot(steps, test_curve, label="test sentences")
ax.axhline(best_ngram, color="tab:red", ls=":", label=f"best n-gram {best_ngram:.3f}")
ax.axhline(H_bits, color="k", ls="--", label=f"entropy {H_bits:.3f}")
ax.set_ylim(1.7, 2.6)
ax.set_xlabel("training step")
ax.set_ylabel("bits per token")
ax.legend()
plt.show()

# %% [markdown]
# What did the embeddings learn? Cosine similarity between the word vectors: words that can
# stand in the same places have become neighbours, although the model was never told what a
# noun is. Nouns group together, and so do the verbs that take an object ("sees", "likes",
# "chases"). Determiners and adjectives look alike, because for predicting the *next* word what
# matters is what follows, and a noun follows both. For the same reason "ball" (only ever an
# object) sits with "sleeps" and "runs": all three end a clause.

# %%
words = "the a every cat dog bird child ball sees likes chases sleeps runs big small old red".split()
vectors = model.embed.weight.numpy()[[vocab.index[w] for w in words]]
unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
fig, ax = plt.subplots(figsize=(5.5, 4.5))
im = ax.imshow(unit @ unit.T, cmap="RdBu_r", vmin=-1, vmax=1)
ax.set_xticks(range(len(words)), words, rotation=90)
ax.set_yticks(range(len(words)), words)
fig.colorbar(im, label="cosine similarity")
plt.show()

# %% [markdown]
# ## Summary
#
# Every model on the same 1,000 test sentences, in bits per token:

# %%
summary = {
    "unigram (no context)": ngram_bits[1, "kneser-ney"],
    "best n-gram": best_ngram,
    f"neural {N}-gram, {STEPS} steps": neural_bits,
    "the grammar itself (on this test set)": oracle_bits,
    "entropy (exact)": H_bits,
}
for name, value in summary.items():
    print(f"{name:>40}: {value:.3f}")

# %% [markdown]
# The neural model wins with the *same* window as the 5-gram: sharing what it learns between
# similar histories is worth more than any smoothing rule, and it comes close to the grammar's
# own score. Its window is still fixed, though. The Transformer (notebook 05 onwards) removes
# that limit: attention lets every position look at every earlier one.

# %% [markdown]
# ## Exercises
#
# 1. **The uniform model.** A model that gives every one of the $V$ words the same probability
#    has perplexity exactly $V$. Show why, compute it for `len(grammar.words) + 1` (the words and
#    `</s>`), and place it on the bar chart.
# 2. **Why not exactly the entropy?** The grammar scored on the test sentences (`oracle_bits`)
#    is close to, but not equal to, the entropy. Which of the two is the floor for *this* test
#    set? Draw 20 test sets of 1,000 sentences and plot the spread of `oracle_bits`.
# 3. **Learning curves.** Fit the 3-, 4- and 5-gram Kneser-Ney models on 300, 1,000, 3,000 and
#    20,000 sentences and plot test bits against training size. From how much data on does the
#    5-gram beat the 4-gram?
# 4. **Smoothing strength.** Try add-k with $k = 1$, $0.1$ and $0.01$ for the 4-gram. Which is best
#    here, and why does a small $k$ suit a language where only a few words can follow each history?
# 5. **The neural window.** Train the neural model with `N = 3` and `N = 7`. Does the
#    longer window help as much as it helped the n-grams, and why can the neural model use a
#    long window where the 5-gram could not?
# 6. **Gibbs' inequality.** Prove $H(p, q) \ge H(p)$ from $\log x \le x - 1$, applied to
#    $x = q(w)/p(w)$. When is it an equality?
