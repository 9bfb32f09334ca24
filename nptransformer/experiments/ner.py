"""Token classification: named entities with a BERT pre-trained by masked-language modelling.

BERT is pre-trained on unlabelled ``ner_examples`` sentences (the masked-LM loss, as in
nptransformer/experiments/transfer.py), then ``BertForTokenClassification`` learns the BIO tags
from a few labelled sentences, (a) with the body frozen, (b) fully fine-tuned, (c) from scratch.
Scores on held-out sentences: token accuracy, entity precision / recall / F1 (an entity counts
only when its type and both ends match), and the accuracy on the ambiguous names ("jordan",
"washington", "apple"), whose tag only the context decides.

The tokenizer is word-level, one token per word, so each word's tag is read at its own position:
no sub-word alignment is needed. ``<cls>``, ``<sep>`` and padding get no tag (IGNORE_INDEX).
"""
from __future__ import annotations

import time

import numpy as np

from .. import functional as F
from ..autograd import no_grad
from ..data import AMBIGUOUS_NAMES, NER_TAGS, WordTokenizer, entity_scores, ner_examples, ner_vocabulary, pad_batch
from ..lm.neural import IGNORE_INDEX
from ..nn import BertForTokenClassification, eval_mode, manual_seed
from .transfer import METHODS, bert_inputs, copy_of, fine_tune, new_body, pretrain

NER_DEFAULTS = {
    "sizes": (50, 200), "seeds": (0,), "test_examples": 1000, "pretrain_examples": 20000,
    "model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "dim_feedforward": 256, "dropout": 0.1, "max_len": 32,
              "tie_weights": False},
    "pretrain": {"steps": 1200, "batch_size": 64, "lr": 2e-3, "warmup": 100},
    "finetune": {"steps": 200, "batch_size": 32, "warmup": 20, "lr": {"frozen": 1e-2, "full": 1e-3, "scratch": 1e-3}},
}
_PRETRAIN_SEED, _TEST_SEED, _LABELLED_SEED = 111, 222, 333
_TAG_ID = {t: i for i, t in enumerate(NER_TAGS)}


def tag_targets(examples) -> np.ndarray:
    """(B, T) tag ids aligned with ``bert_inputs``: IGNORE_INDEX at ``<cls>``, ``<sep>`` and padding."""
    return pad_batch([[IGNORE_INDEX, *(_TAG_ID[t] for t in tags), IGNORE_INDEX] for _, tags in examples],
                     IGNORE_INDEX)[0]


def ner_loss(tokenizer):
    """``loss_of`` for ``fine_tune`` on (tokens, tags) examples: the mean cross-entropy per tagged token."""
    def loss_of(model, batch):
        logits = model(bert_inputs([s for s, _ in batch], tokenizer))  # (B, T, len(NER_TAGS))
        return F.cross_entropy(logits, tag_targets(batch), ignore_index=IGNORE_INDEX)

    return loss_of


def predict_tags(model, sentences, tokenizer, batch_size=500) -> list[list[str]]:
    """The most likely tag of every word of every sentence (eval mode, no gradients)."""
    out = []
    with no_grad(), eval_mode(model):
        for start in range(0, len(sentences), batch_size):
            part = sentences[start:start + batch_size]
            best = model(bert_inputs(part, tokenizer)).numpy().argmax(axis=-1)  # (B, T)
            out += [[NER_TAGS[i] for i in best[b, 1:len(s) + 1]] for b, s in enumerate(part)]
    return out


def ner_scores(model, examples, tokenizer) -> dict:
    """Token accuracy, entity precision / recall / F1, and the accuracy on the ambiguous names."""
    predicted = predict_tags(model, [s for s, _ in examples], tokenizer)
    right = [p == t for (_, tags), pred in zip(examples, predicted) for p, t in zip(pred, tags)]
    ambiguous = [p == t for (words, tags), pred in zip(examples, predicted)
                 for w, p, t in zip(words, pred, tags) if w in AMBIGUOUS_NAMES]
    return {"token_accuracy": float(np.mean(right)), **entity_scores([t for _, t in examples], predicted),
            "ambiguous_accuracy": float(np.mean(ambiguous)) if ambiguous else None}


def ner_experiment(log=print, **overrides) -> dict:
    """Pre-train BERT on unlabelled entity sentences, fine-tune it three ways (``METHODS``) on each
    labelled-set size and seed, and score every run on the same held-out sentences.

    ``overrides`` replace entries of NER_DEFAULTS (``model``, ``pretrain`` and ``finetune`` merge).
    Returns ``{"settings", "pretrain_final_loss", "pretrain_seconds", "runs": [{"method", "size",
    "seed", "token_accuracy", "precision", "recall", "f1", "ambiguous_accuracy", "seconds"}, ...],
    "seconds"}``.
    """
    s = {k: (dict(v) if isinstance(v, dict) else v) for k, v in NER_DEFAULTS.items()}
    for key, value in overrides.items():
        if key not in s:
            raise ValueError(f"ner_experiment: unknown setting {key!r}; known: {sorted(s)}")
        s[key] = {**s[key], **value} if isinstance(s[key], dict) else value
    start_all = time.perf_counter()
    tokenizer = WordTokenizer(ner_vocabulary())
    V, ft = tokenizer.vocab_size, s["finetune"]
    corpus = [tokens for tokens, _ in ner_examples(s["pretrain_examples"], _PRETRAIN_SEED)]
    test = ner_examples(s["test_examples"], _TEST_SEED)
    start = time.perf_counter()
    mlm, losses = pretrain("bert", corpus, tokenizer, s["model"], **s["pretrain"])
    pretrained = mlm.bert
    out = {"settings": s, "pretrain_final_loss": float(np.mean(losses[-50:])),
           "pretrain_seconds": round(time.perf_counter() - start, 1), "runs": []}
    log(f"bert: pre-trained {s['pretrain']['steps']} steps in {out['pretrain_seconds']} s, "
        f"masked-LM loss {out['pretrain_final_loss']:.3f}")
    for size in s["sizes"]:
        for seed in s["seeds"]:
            labelled = ner_examples(size, _LABELLED_SEED + 1000 * seed + size)
            for method in METHODS:
                start = time.perf_counter()
                body = new_body("bert", V, s["model"], seed=1 + seed) if method == "scratch" else \
                    copy_of("bert", pretrained, V, s["model"])
                manual_seed(seed)
                model = BertForTokenClassification(body, len(NER_TAGS), dropout=s["model"]["dropout"])
                fine_tune(model, body, labelled, ner_loss(tokenizer), method == "frozen", ft["steps"], ft["batch_size"],
                          ft["lr"][method], ft["warmup"], seed)
                run = {"method": method, "size": size, "seed": seed, **ner_scores(model, test, tokenizer),
                       "seconds": round(time.perf_counter() - start, 2)}
                out["runs"].append(run)
                log(f"  {method:>7} n={size:<4} seed {seed}: entity F1 {run['f1']:.3f}, token accuracy "
                    f"{run['token_accuracy']:.3f}, ambiguous names {run['ambiguous_accuracy']:.3f}")
    out["seconds"] = round(time.perf_counter() - start_all, 1)
    return out


def ner_markdown(result: dict) -> str:
    """The table of docs/experiments.md for an ``ner_experiment`` result (means over seeds)."""
    out = [f"BERT pre-trained in {result['pretrain_seconds']:.0f} s to masked-LM loss {result['pretrain_final_loss']:.3f}\n",
           "| method | labelled sentences | entity F1 | precision | recall | token accuracy | ambiguous names |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    sizes = sorted({run["size"] for run in result["runs"]})
    for n in sizes:
        for method in METHODS:
            runs = [run for run in result["runs"] if run["method"] == method and run["size"] == n]
            mean = {k: np.mean([run[k] for run in runs]) for k in ("f1", "precision", "recall", "token_accuracy",
                                                                     "ambiguous_accuracy")}
            out.append(f"| {method} | {n} | {mean['f1']:.3f} | {mean['precision']:.3f} | {mean['recall']:.3f} | "
                       f"{mean['token_accuracy']:.3f} | {mean['ambiguous_accuracy']:.3f} |")
    return "\n".join(out) + "\n"
