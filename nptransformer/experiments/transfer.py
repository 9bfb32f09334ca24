"""Pre-train, then fine-tune: what pre-training buys when labels are scarce.

A GPT (causal language model) and a BERT (masked language model) are pre-trained on unlabelled
reviews of ``sentiment_examples``. Their labels depend on negation and word order (see
nptransformer/data/nlp_tasks.py), and nothing in the pre-training loss mentions them: the models
only learn to predict words. Unlabelled text still carries the signal: "and" joins clauses of
the same polarity and "but" clauses of opposite ones, so predicting a masked or next adjective
needs the polarity of the clause before it, negation included.

Then each model is fine-tuned on 50, 200 and 1000 labelled reviews, three ways:

(a) ``frozen``: the pre-trained body is frozen (``requires_grad_(False)``) and only a new linear
    head learns (the source's recipe);
(b) ``full``: the same, with every parameter learning;
(c) ``scratch``: the same architecture from a random start, every parameter learning;

and scored on held-out reviews. The GPT classifies from its last token's final hidden state (GPT-1's
recipe, Radford et al. 2018, section 3.3); BERT from its pooled ``<cls>`` output
(``BertForSequenceClassification``).
"""
from __future__ import annotations

import time

import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..data import (
    BOS_ID,
    CLS_ID,
    EOS_ID,
    MASK_ID,
    PAD_ID,
    RATING_PREFIX,
    RATING_WORDS,
    SEP_ID,
    WordTokenizer,
    mask_tokens,
    pad_batch,
    review_corpus,
    sentiment_examples,
    sentiment_vocabulary,
)
from ..lm.neural import IGNORE_INDEX
from ..nn import BERT, GPT, BertForMaskedLM, BertForSequenceClassification, Dropout, Linear, Module, eval_mode, manual_seed
from .loop import fit, step_rng

METHODS = ("frozen", "full", "scratch")
FAMILIES = ("gpt", "bert")
TRANSFER_DEFAULTS = {
    "sizes": (50, 200, 1000), "seeds": (0, 1), "test_examples": 2000, "pretrain_examples": 20000, "rating_rate": 0.5,
    "model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "dim_feedforward": 256, "dropout": 0.0, "max_len": 32,
              "tie_weights": False},
    "pretrain": {"steps": {"gpt": 1500, "bert": 9000}, "batch_size": 64, "lr": 3e-3, "warmup": 100},
    "finetune": {"steps": 200, "batch_size": 32, "warmup": 20, "lr": {"frozen": 1e-2, "full": 1e-3, "scratch": 1e-3}},
}
"""``tie_weights`` False: a word's input embedding is not also its output vector. Measured on this
corpus (GPT, 2500 steps of 64 reviews): tied, the model's prediction of the rating stays at
chance throughout; untied, it is right on every held-out review from step 1000 on. The output
role pushes the sentiment words together (as outputs they are interchangeable in almost every
context), the very distinction the input role needs. ``pretrain["steps"]`` may name each family's
own number of steps: a masked-LM sees the rating word masked in 15 % of the rated reviews only,
so BERT needs more of them (measured: its own prediction of the rating is right on 62.8 % of the
test reviews after 3,000 steps, 94.1 % after 9,000; docs/experiments.md)."""
_PRETRAIN_SEED, _TEST_SEED, _LABELLED_SEED = 101, 202, 303  # disjoint draws of reviews


class GPTForSequenceClassification(Module):
    """A GPT body + dropout + a linear classifier on the final hidden state (after ``ln_f``) of each
    sequence's last real token: the one position that has read the whole sequence.

    ``forward(ids, lengths)``: ids (B, T) padded on the right, ``lengths`` (B,) the real tokens
    in each row -> logits (B, num_labels). Causal attention keeps the padding after a row's last
    token out of its hidden state, so no padding mask is needed.
    """

    def __init__(self, gpt: GPT, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.gpt = gpt
        self.dropout = Dropout(dropout)
        self.classifier = Linear(gpt.d_model, num_labels)

    def forward(self, ids, lengths):
        gpt = self.gpt
        x = gpt.drop(gpt.pos_emb(gpt.tok_emb(ids)))  # (B, T) -> (B, T, C): GPT.forward without the head
        for block in gpt.blocks:
            x = block(x)
        x = gpt.ln_f(x)
        last = x[np.arange(len(lengths)), np.asarray(lengths) - 1]  # (B, T, C) -> (B, C)
        return self.classifier(self.dropout(last))


# ============================================================================ batches
def gpt_inputs(sentences, tokenizer):
    """(ids (B, T), lengths (B,)): ``<bos> w1 .. wk . rated`` padded with ``<pad>``. The GPT
    classifies from the last position: in pre-training, the one that predicts a review's rating
    (GPT-1 likewise appends a delimiter and reads the answer from it)."""
    suffix = [tokenizer.token_to_id(w) for w in RATING_PREFIX]
    ids = [[BOS_ID, *tokenizer.encode(" ".join(s)), *suffix] for s in sentences]
    return pad_batch(ids, PAD_ID)[0], np.array([len(i) for i in ids])


def bert_inputs(sentences, tokenizer):
    """ids (B, T): ``<cls> w1 .. wk <sep>`` padded with ``<pad>`` (BERT masks it from ``pad_id``)."""
    return pad_batch([[CLS_ID, *tokenizer.encode(" ".join(s)), SEP_ID] for s in sentences], PAD_ID)[0]


def mlm_batch(ids, rng, vocab_size):
    """``mask_tokens`` on ``ids``, drawn again in the (rare) case that it chose no position, so the
    loss always has a target."""
    while True:
        inputs, labels = mask_tokens(ids, rng, vocab_size, MASK_ID, ignore_index=IGNORE_INDEX)
        if (labels != IGNORE_INDEX).any():
            return inputs, labels


# ============================================================================ models
class UntiedBertForMaskedLM(BertForMaskedLM):
    """``BertForMaskedLM`` with an output projection of its own instead of the word embeddings'
    transpose. (Tied, the embedding of a word must serve as input and as output; see
    ``TRANSFER_DEFAULTS["model"]["tie_weights"]`` for why that stalls these small models.)"""

    def __init__(self, bert: BERT, activation="gelu"):
        super().__init__(bert, activation)
        self.decoder = Linear(bert.d_model, bert.embeddings.word_embeddings.num_embeddings, bias=False)

    def forward(self, ids, token_type_ids=None, attention_mask=None):
        x, _ = self.bert(ids, token_type_ids, attention_mask)
        return self.decoder(self.transform_norm(self.activation(self.transform(x)))) + self.decoder_bias


def new_body(family: str, vocab_size: int, model: dict, seed: int):
    """A freshly initialized GPT or BERT of the experiment's size."""
    rng = np.random.default_rng(seed)
    manual_seed(seed)
    if family == "gpt":
        return GPT(vocab_size, model["d_model"], model["n_layers"], model["n_heads"], model["max_len"],
                   dropout=model["dropout"], dim_feedforward=model["dim_feedforward"],
                   tie_weights=model["tie_weights"], rng=rng)
    return BERT(vocab_size, model["d_model"], model["n_layers"], model["n_heads"], model["max_len"],
                dim_feedforward=model["dim_feedforward"], dropout=model["dropout"], pad_id=PAD_ID, rng=rng)


def pretrain(family: str, sentences, tokenizer, model: dict, steps, batch_size, lr, warmup, seed=0, on_step=None):
    """Pre-train on unlabelled ``sentences``: a GPT with next-token prediction (``<bos> w1 .. wk``
    -> ``w1 .. wk <eos>``), a BERT with the masked-LM loss (``mask_tokens``: 15 %, 80/10/10).
    Returns (the language model: the GPT, or the BERT inside its masked-LM head; losses); the
    body to fine-tune is ``lm`` for a GPT and ``lm.bert`` for a BERT. ``on_step(step, lm)`` is
    ``fit``'s hook (a validation curve, early stopping)."""
    V = tokenizer.vocab_size
    body = new_body(family, V, model, seed)
    if family == "gpt":
        def batch(step):
            rows = step_rng(seed, step).integers(0, len(sentences), batch_size)
            ids = [tokenizer.encode(" ".join(sentences[i])) for i in rows]
            return pad_batch([[BOS_ID, *s] for s in ids], PAD_ID)[0], pad_batch([[*s, EOS_ID] for s in ids], IGNORE_INDEX)[0]

        return body, fit(body, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batch, steps, lr, warmup, on_step=on_step)
    mlm = BertForMaskedLM(body) if model["tie_weights"] else UntiedBertForMaskedLM(body)

    def batch(step):
        rng = step_rng(seed, step)
        rows = rng.integers(0, len(sentences), batch_size)
        return mlm_batch(bert_inputs([sentences[i] for i in rows], tokenizer), rng, V)

    return mlm, fit(mlm, lambda m, b: F.cross_entropy(m(b[0]), b[1]), batch, steps, lr, warmup, on_step=on_step)


def rating_accuracy(family: str, lm, examples, tokenizer) -> float:
    """How often the pre-trained language model itself, never fine-tuned, prefers the right rating
    word (``RATING_WORDS[label]``) after a review and ``.``: the GPT's next-token logits after
    ``<bos> review .``, the BERT's logits at ``<mask>`` in ``<cls> review . <mask> <sep>``."""
    one, five = (tokenizer.token_to_id(w) for w in RATING_WORDS)
    sentences = [s for s, _ in examples]
    with no_grad(), eval_mode(lm):
        if family == "gpt":
            ids, lengths = gpt_inputs(sentences, tokenizer)
            where = lengths - 1
        else:
            rows = [[CLS_ID, *tokenizer.encode(" ".join([*s, *RATING_PREFIX])), MASK_ID, SEP_ID] for s in sentences]
            ids, where = pad_batch(rows, PAD_ID)[0], np.array([len(r) - 2 for r in rows])
        logits = lm(ids).numpy()[np.arange(len(sentences)), where]  # (B, V) at the rating's position
    predicted = (logits[:, five] > logits[:, one]).astype(int)
    return float(np.mean(predicted == np.array([y for _, y in examples])))


def classifier(family: str, body, num_labels: int = 2, dropout: float = 0.1):
    """A new linear head (and dropout) on ``body``."""
    if family == "gpt":
        return GPTForSequenceClassification(body, num_labels, dropout)
    return BertForSequenceClassification(body, num_labels, dropout)


def copy_of(family, body, vocab_size, model: dict):
    """A new body with ``body``'s weights: each fine-tuning run starts from the same pre-trained state."""
    fresh = new_body(family, vocab_size, model, seed=0)
    fresh.load_state_dict(body.state_dict())
    return fresh


def logits_of(family, model, sentences, tokenizer):
    if family == "gpt":
        return model(*gpt_inputs(sentences, tokenizer))
    return model(bert_inputs(sentences, tokenizer))


def fine_tune(model, body, examples, loss_of, frozen: bool | None, steps, batch_size, lr, warmup, seed=0,
              on_step=None):
    """Train ``model`` (a head around ``body``) on ``examples``: ``loss_of(model, batch)`` scores a
    batch, a list of examples drawn without replacement. ``frozen=True``: ``body.requires_grad_(False)``
    first, so only the head learns and the optimizer never sees the body; ``False``: the whole
    body learns; ``None``: each parameter keeps the ``requires_grad`` the caller gave it (freeze
    the embeddings or the lower layers only). ``on_step`` is ``fit``'s hook. Returns the losses."""
    if frozen is not None:
        body.requires_grad_(not frozen)
    size = min(batch_size, len(examples))

    def batch(step):
        return [examples[i] for i in step_rng(seed, step).choice(len(examples), size, replace=False)]

    return fit(model, loss_of, batch, steps, lr, warmup, on_step=on_step)


def sentiment_loss(family, tokenizer):
    """``loss_of`` for ``fine_tune`` on (review tokens, label) examples: the mean cross-entropy."""
    def loss_of(model, batch):
        logits = logits_of(family, model, [s for s, _ in batch], tokenizer)  # (B, 2)
        return F.cross_entropy(logits, np.array([y for _, y in batch]))

    return loss_of


def accuracy(family, model, examples, tokenizer, batch_size=500) -> dict:
    """Accuracy on ``examples`` overall and on the contrast reviews ("but", "although"), whose
    label depends on the order of the clauses (None when ``examples`` holds none). Eval mode, no
    gradients."""
    correct = []
    with no_grad(), eval_mode(model):
        for start in range(0, len(examples), batch_size):
            part = examples[start:start + batch_size]
            predicted = logits_of(family, model, [s for s, _ in part], tokenizer).numpy().argmax(axis=-1)
            correct += (predicted == np.array([y for _, y in part])).tolist()
    correct = np.array(correct)
    contrast = np.array([("but" in s or "although" in s) for s, _ in examples])
    return {"accuracy": float(correct.mean()),
            "contrast_accuracy": float(correct[contrast].mean()) if contrast.any() else None}


# ============================================================================ the experiment
def _settings(overrides):
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TRANSFER_DEFAULTS.items()}
    for key, value in (overrides or {}).items():
        if key not in out:
            raise ValueError(f"transfer_learning_curves: unknown setting {key!r}; known: {sorted(out)}")
        out[key] = {**out[key], **value} if isinstance(out[key], dict) else value
    return out


def transfer_learning_curves(families=FAMILIES, log=print, **overrides) -> dict:
    """Pre-train each family once, fine-tune it (a) frozen, (b) fully and (c) from scratch on each
    labelled-set size and seed, and score every run on the same held-out reviews.

    ``overrides`` replace entries of TRANSFER_DEFAULTS (``model``, ``pretrain`` and ``finetune``
    merge into the defaults). Returns ``{"settings", "families": {family: {"pretrain_final_loss",
    "pretrain_seconds", "pretrain_rating_accuracy", "runs": [{"method", "size", "seed", "accuracy", "contrast_accuracy",
    "seconds"}, ...], "curves": {method: {size: mean accuracy}}}}, "seconds"}``.
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise ValueError(f"transfer_learning_curves: unknown or no families {unknown}; expected {FAMILIES}")
    s = _settings(overrides)
    start_all = time.perf_counter()
    tokenizer = WordTokenizer(sentiment_vocabulary())
    V = tokenizer.vocab_size
    corpus = review_corpus(s["pretrain_examples"], _PRETRAIN_SEED, s["rating_rate"])
    test = sentiment_examples(s["test_examples"], _TEST_SEED)
    ft = s["finetune"]
    out = {"settings": s, "families": {}}
    for family in families:
        start = time.perf_counter()
        settings = dict(s["pretrain"])
        if isinstance(settings["steps"], dict):
            settings["steps"] = settings["steps"][family]
        lm, losses = pretrain(family, corpus, tokenizer, s["model"], **settings)
        pretrained = lm if family == "gpt" else lm.bert
        record = {"pretrain_final_loss": float(np.mean(losses[-50:])),
                  "pretrain_seconds": round(time.perf_counter() - start, 1),
                  "pretrain_rating_accuracy": rating_accuracy(family, lm, test, tokenizer), "runs": []}
        log(f"{family}: pre-trained {settings['steps']} steps in {record['pretrain_seconds']} s, loss "
            f"{record['pretrain_final_loss']:.3f}; its own rating prediction is right on "
            f"{record['pretrain_rating_accuracy']:.3f} of the test reviews")
        for size in s["sizes"]:
            for seed in s["seeds"]:
                labelled = sentiment_examples(size, _LABELLED_SEED + 1000 * seed + size)
                for method in METHODS:
                    start = time.perf_counter()
                    body = new_body(family, V, s["model"], seed=1 + seed) if method == "scratch" else \
                        copy_of(family, pretrained, V, s["model"])
                    manual_seed(seed)  # the head's initial weights and its dropout's generator
                    model = classifier(family, body, dropout=s["model"]["dropout"])
                    fine_tune(model, body, labelled, sentiment_loss(family, tokenizer), method == "frozen",
                              ft["steps"], ft["batch_size"], ft["lr"][method], ft["warmup"], seed)
                    run = {"method": method, "size": size, "seed": seed, **accuracy(family, model, test, tokenizer),
                           "seconds": round(time.perf_counter() - start, 2)}
                    record["runs"].append(run)
                    contrast = run["contrast_accuracy"]
                    log(f"  {family} {method:>7} n={size:<5} seed {seed}: accuracy {run['accuracy']:.3f}"
                        + ("" if contrast is None else f" (contrast {contrast:.3f})"))
        record["curves"] = {m: {str(n): float(np.mean([r["accuracy"] for r in record["runs"]
                                                       if r["method"] == m and r["size"] == n])) for n in s["sizes"]}
                            for m in METHODS}
        out["families"][family] = record
    out["seconds"] = round(time.perf_counter() - start_all, 1)
    return out


def plot_transfer_curves(result: dict, path) -> None:
    """The learning curves of ``transfer_learning_curves``: one panel per family, test accuracy
    against labelled examples for each method (mean over seeds, bars from the lowest to the
    highest seed), written to ``path`` as PNG."""
    from .plots import figure, save

    families = list(result["families"])
    fig = figure(width=5.2 * len(families), height=4.0)
    colors = {"frozen": "tab:blue", "full": "tab:green", "scratch": "tab:red"}
    labels = {"frozen": "(a) frozen body, new head", "full": "(b) full fine-tuning", "scratch": "(c) from scratch"}
    for k, family in enumerate(families):
        ax = fig.add_subplot(1, len(families), k + 1)
        runs = result["families"][family]["runs"]
        sizes = sorted({r["size"] for r in runs})
        for method in METHODS:
            acc = [[r["accuracy"] for r in runs if r["method"] == method and r["size"] == n] for n in sizes]
            mean = np.array([np.mean(a) for a in acc])
            low, high = mean - np.array([min(a) for a in acc]), np.array([max(a) for a in acc]) - mean
            ax.errorbar(sizes, mean, yerr=[low, high], marker="o", capsize=3, color=colors[method], label=labels[method])
        ax.axhline(0.5, color="k", ls=":", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_ylim(0.4, 1.0)
        ax.set_xlabel("labelled training examples")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{family.upper()}: pre-trained on unlabelled reviews")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    save(fig, path)


def transfer_markdown(result: dict) -> str:
    """The tables of docs/experiments.md for a ``transfer_learning_curves`` result: test accuracy,
    mean over seeds (lowest-highest), for each method and labelled-set size."""
    out = []
    for family, r in result["families"].items():
        sizes = sorted({run["size"] for run in r["runs"]})
        out.append(f"**{family.upper()}**: pre-trained in {r['pretrain_seconds']:.0f} s to loss "
                   f"{r['pretrain_final_loss']:.3f}; before any fine-tuning its own prediction of the rating "
                   f"word is right on {100 * r['pretrain_rating_accuracy']:.1f} % of the test reviews\n")
        for key, what in (("accuracy", "test accuracy"), ("contrast_accuracy", "accuracy on the contrast reviews")):
            out.append(f"| {what} | " + " | ".join(f"n = {n}" for n in sizes) + " |")
            out.append("|---|" + "---:|" * len(sizes))
            for method in METHODS:
                cells = []
                for n in sizes:
                    values = [run[key] for run in r["runs"]
                              if run["method"] == method and run["size"] == n and run[key] is not None]
                    if not values:
                        cells.append("-")
                        continue
                    spread = f" ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else ""
                    cells.append(f"{np.mean(values):.3f}{spread}")
                out.append(f"| {method} | " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out)
