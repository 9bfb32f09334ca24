"""Few-shot prompting: a pre-trained GPT given k labelled examples in its context, no update at all.

The GPT is pre-trained on ``few_shot_documents``: reviews, each followed by ``:`` and a label word
and ``;``. Every document draws its own pair of label words (``yes``/``no``, ``up``/``down``,
``red``/``blue``, ...) and its own assignment of them to positive and negative, so nothing
outside a document says which word a positive review gets. Inside one, the examples say it.

A k-shot prompt is k labelled examples, then the query review and ``:``::

    <bos> the food was not bad : up ; the staff was rude : down ; the room was lovely :

and the model's answer is whichever of the prompt's two label words gets the larger logit at the
last position. With k = 0 it cannot know which word means what, so it is right half of the time;
the curve of accuracy against k shows what the examples in the context teach it. The queries,
their label words and their examples are the same for every k (the examples of a k-shot prompt
are the first k of the largest k's), so only k changes along the curve.
"""
from __future__ import annotations

import time

import numpy as np

from ..autograd import no_grad
from ..data import (
    BOS_ID,
    FEW_SHOT_LABEL_WORDS,
    PAD_ID,
    RATING_PREFIX,
    RATING_WORDS,
    WordTokenizer,
    few_shot_document,
    few_shot_documents,
    few_shot_vocabulary,
    pad_batch,
    review_corpus,
    sentiment_examples,
)
from ..nn import eval_mode
from .transfer import pretrain

FEW_SHOT_DEFAULTS = {
    "ks": (0, 1, 2, 4, 8), "prompts": 500, "pretrain_documents": 20000, "examples_per_document": 9,
    "forms": ("single",), "negation_rate": 0.0, "rated_fraction": 0.0,
    "model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "dim_feedforward": 256, "dropout": 0.0, "max_len": 128,
              "tie_weights": False},
    "pretrain": {"steps": 1500, "batch_size": 32, "lr": 3e-3, "warmup": 100},
}
_PRETRAIN_SEED, _QUERY_SEED, _EXAMPLE_SEED, _WORDS_SEED = 121, 232, 343, 454


def few_shot_prompts(ks, prompts: int, forms=None, negation_rate: float = 0.4, seed: int = 0):
    """For each k in ``ks``: ``prompts`` (prompt tokens, right label word, wrong label word).

    Query i, its label-word pair (and which word is positive) and its examples are the same for
    every k; its k-shot prompt holds the first k of its examples.
    """
    rng = np.random.default_rng((_WORDS_SEED, seed))
    queries = sentiment_examples(prompts, _QUERY_SEED + seed, forms, negation_rate)
    most = max(ks)
    examples = sentiment_examples(prompts * most, _EXAMPLE_SEED + seed, forms, negation_rate) if most else []
    words = []
    for _ in range(prompts):
        pair = FEW_SHOT_LABEL_WORDS[rng.integers(len(FEW_SHOT_LABEL_WORDS))]
        words.append(pair[::-1] if rng.random() < 0.5 else pair)
    out = {}
    for k in ks:
        out[k] = []
        for i, (query, label) in enumerate(queries):
            prompt = few_shot_document(examples[i * most:i * most + k], words[i]) + list(query) + [":"]
            out[k].append((prompt, words[i][label], words[i][1 - label]))
    return out


def few_shot_scores(gpt, tokenizer, prompts, batch_size=250) -> dict:
    """Two numbers over (prompt, right word, wrong word) triples, read from the next-token
    distribution after each prompt (eval mode, no gradients):

    * ``accuracy``: the fraction where the right word gets the larger logit of the two;
    * ``label_mass``: the mean probability of the prompt's two label words together, how sure
      the model is that one of them comes next (whichever it prefers);
    * ``all_label_mass``: the mean probability of every pair's label words
      (``FEW_SHOT_LABEL_WORDS``), how sure it is that some label word comes next."""
    label_ids = [tokenizer.token_to_id(w) for pair in FEW_SHOT_LABEL_WORDS for w in pair]
    right, mass, all_mass = [], [], []
    with no_grad(), eval_mode(gpt):
        for start in range(0, len(prompts), batch_size):
            part = prompts[start:start + batch_size]
            ids = [[BOS_ID, *tokenizer.encode(" ".join(p))] for p, _, _ in part]
            inputs, _ = pad_batch(ids, PAD_ID)
            lengths = np.array([len(i) for i in ids])
            last = gpt(inputs).numpy()[np.arange(len(part)), lengths - 1].astype(np.float64)  # (B, V) after ":"
            probs = np.exp(last - last.max(axis=-1, keepdims=True))
            probs /= probs.sum(axis=-1, keepdims=True)
            good = np.array([tokenizer.token_to_id(w) for _, w, _ in part])
            bad = np.array([tokenizer.token_to_id(w) for _, _, w in part])
            rows = np.arange(len(part))
            right += (last[rows, good] > last[rows, bad]).tolist()
            mass += (probs[rows, good] + probs[rows, bad]).tolist()
            all_mass += probs[:, label_ids].sum(axis=1).tolist()
    return {"accuracy": float(np.mean(right)), "label_mass": float(np.mean(mass)),
            "all_label_mass": float(np.mean(all_mass))}


def few_shot_curve(log=print, **overrides) -> dict:
    """Pre-train a GPT on few-shot documents, then measure its k-shot accuracy for each k.

    ``overrides`` replace entries of FEW_SHOT_DEFAULTS (``model`` and ``pretrain`` merge).
    ``rated_fraction`` of the pre-training documents are instead single reviews ending with their
    rating word, as in the transfer experiment (``review_corpus(..., rating_rate=1)``): text in
    which the sentiment itself is worth computing, with fixed words.
    Returns ``{"settings", "pretrain_final_loss", "pretrain_seconds", "accuracy": {k: accuracy},
    "label_mass": {k: probability of the two label words}, "prompt_tokens": {k: mean prompt
    length}, "seconds"}``.
    """
    s = {k: (dict(v) if isinstance(v, dict) else v) for k, v in FEW_SHOT_DEFAULTS.items()}
    for key, value in overrides.items():
        if key not in s:
            raise ValueError(f"few_shot_curve: unknown setting {key!r}; known: {sorted(s)}")
        s[key] = {**s[key], **value} if isinstance(s[key], dict) else value
    forms = list(s["forms"]) if s["forms"] is not None else None
    start_all = time.perf_counter()
    tokenizer = WordTokenizer(sorted({*few_shot_vocabulary(), *RATING_PREFIX, *RATING_WORDS}))
    prompts = few_shot_prompts(s["ks"], s["prompts"], forms, s["negation_rate"])
    longest = max(len(p) + 1 for k in prompts for p, _, _ in prompts[k])
    if longest > s["model"]["max_len"]:
        raise ValueError(f"few_shot_curve: a prompt has {longest} tokens; model max_len {s['model']['max_len']} is too small")
    documents = few_shot_documents(s["pretrain_documents"], _PRETRAIN_SEED, s["examples_per_document"], forms,
                                   s["negation_rate"])
    rated = round(s["rated_fraction"] * len(documents))
    if rated:
        reviews = review_corpus(rated, _PRETRAIN_SEED, rating_rate=1.0, forms=forms)
        documents = documents[:len(documents) - rated] + reviews
    start = time.perf_counter()
    gpt, losses = pretrain("gpt", documents, tokenizer, s["model"], **s["pretrain"])
    out = {"settings": s, "pretrain_final_loss": float(np.mean(losses[-50:])),
           "pretrain_seconds": round(time.perf_counter() - start, 1), "accuracy": {}, "label_mass": {},
           "prompt_tokens": {}}
    log(f"gpt: pre-trained {s['pretrain']['steps']} steps on few-shot documents in {out['pretrain_seconds']} s, "
        f"loss {out['pretrain_final_loss']:.3f}")
    for k in s["ks"]:
        scores = few_shot_scores(gpt, tokenizer, prompts[k])
        out["accuracy"][str(k)], out["label_mass"][str(k)] = scores["accuracy"], scores["label_mass"]
        out["prompt_tokens"][str(k)] = float(np.mean([len(p) + 1 for p, _, _ in prompts[k]]))
        log(f"  k = {k}: accuracy {scores['accuracy']:.3f}, P(one of the two label words) "
            f"{scores['label_mass']:.3f} ({s['prompts']} prompts, {out['prompt_tokens'][str(k)]:.0f} tokens on average)")
    out["seconds"] = round(time.perf_counter() - start_all, 1)
    return out


def draw_few_shot_curve(ax, ks, accuracy, label_mass) -> None:
    """Draw on matplotlib axes ``ax`` the accuracy and the probability of the prompt's two label
    words against k (one value per k in ``ks``), with the chance line."""
    ax.plot(ks, accuracy, marker="o", label="accuracy (right word > wrong word)")
    ax.plot(ks, label_mass, marker="s", label="P(one of the prompt's two label words)")
    ax.axhline(0.5, color="k", ls=":", lw=1, label="chance accuracy")
    ax.set_xticks(ks)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("k, labelled examples in the prompt")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)


def plot_few_shot_curve(result: dict, path) -> None:
    """``draw_few_shot_curve`` of a ``few_shot_curve`` result, written to ``path`` as PNG."""
    from .plots import figure, save

    ks = [int(k) for k in result["accuracy"]]
    fig = figure(width=5.0, height=3.6)
    ax = fig.add_subplot()
    draw_few_shot_curve(ax, ks, [result["accuracy"][str(k)] for k in ks], [result["label_mass"][str(k)] for k in ks])
    ax.set_title("Few-shot prompts, pre-trained GPT")
    save(fig, path)


def few_shot_markdown(result: dict) -> str:
    """The table of docs/experiments.md for a ``few_shot_curve`` result."""
    ks = list(result["accuracy"])
    return "\n".join([
        f"GPT pre-trained in {result['pretrain_seconds']:.0f} s to loss {result['pretrain_final_loss']:.3f}\n",
        "| k (examples in the prompt) | " + " | ".join(ks) + " |",
        "|---|" + "---:|" * len(ks),
        "| accuracy | " + " | ".join(f"{result['accuracy'][k]:.3f}" for k in ks) + " |",
        "| P(one of the two label words) | " + " | ".join(f"{result['label_mass'][k]:.3f}" for k in ks) + " |",
        "| prompt tokens (mean) | " + " | ".join(f"{result['prompt_tokens'][k]:.0f}" for k in ks) + " |",
    ]) + "\n"
