"""The experiments of docs/experiments.md at toy sizes: well-formed results, reproducible, the
frozen body really frozen, and the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nptransformer import no_grad
from nptransformer.nn import eval_mode
from nptransformer.data import (
    BOS_ID,
    FEW_SHOT_LABEL_WORDS,
    PAD_ID,
    WordTokenizer,
    few_shot_vocabulary,
    pad_batch,
    sentiment_examples,
    sentiment_vocabulary,
)
from nptransformer.experiments import EXPERIMENTS, QUICK_SETTINGS, few_shot_curve, fit, perplexity_table
from nptransformer.experiments.__main__ import main
from nptransformer.experiments.few_shot import few_shot_prompts, few_shot_scores
from nptransformer.experiments.perplexity import docstring_corpus, docstring_sentences, grammar_corpus
from nptransformer.experiments.transfer import (
    FAMILIES,
    TRANSFER_DEFAULTS,
    accuracy,
    classifier,
    fine_tune,
    new_body,
    sentiment_loss,
)

MODEL = TRANSFER_DEFAULTS["model"] | QUICK_SETTINGS["transfer"]["model"] | {"dropout": 0.1}


def _quiet(*args):
    pass


@pytest.fixture(scope="module")
def results():
    return {name: run(log=_quiet, **QUICK_SETTINGS[name]) for name, run in EXPERIMENTS.items()}


def test_perplexity_table_is_well_formed(results):
    grammar = results["perplexity"]["grammar"]
    names = [r["model"] for r in grammar["rows"]]
    assert names == ["add-1 1-gram", "add-1 2-gram", "Kneser-Ney 1-gram", "Kneser-Ney 2-gram",
                     "neural 3-gram (Bengio 2003)", "GPT (1 layers, d=16)"]
    for row in grammar["rows"]:
        assert row["perplexity"] == pytest.approx(np.exp(row["nats"])) and row["bits"] == pytest.approx(row["nats"] / np.log(2))
        assert 1.0 < row["perplexity"] < 2 * grammar["vocabulary"]
    assert grammar["entropy_bits"] == pytest.approx(1.888, abs=1e-3)
    _, test = grammar_corpus(300, 50, seed=0)  # the quick settings' sentences: N counts each </s>
    assert grammar["test_tokens"] == sum(len(s) + 1 for s in test)
    assert grammar["oracle_bits"] > 0 and grammar["unk_rate"] == 0.0


def test_docstring_corpus_shares_one_vocabulary():
    train, test = docstring_corpus(min_count=2, limit=60)
    assert train and test
    seen = {w for s in train for w in s}
    assert all(w in seen for s in test for w in s)  # unseen test words became <unk>
    assert docstring_sentences("Return the sum.  Raise ValueError if empty!\n\nSee also: x", 40) == [
        ["return", "the", "sum", "."], ["raise", "valueerror", "if", "empty", "!"], ["see", "also", ":", "x"]]
    tiny = {"orders": (1,), "neural": {"steps": 3, "warmup": 1, "hidden": 8, "embed_dim": 4, "batch_size": 16},
            "gpt": {"steps": 2, "warmup": 1, "d_model": 8, "n_heads": 2, "n_layers": 1, "batch_size": 4}}
    result = perplexity_table(("docstrings",), docstrings=tiny, docstring_limit=40, log=_quiet)
    assert len(result["docstrings"]["rows"]) == 4 and 0 <= result["docstrings"]["unk_rate"] < 1


def test_transfer_curves_are_well_formed(results):
    out = results["transfer"]
    assert set(out["families"]) == {"gpt", "bert"}
    for family in out["families"].values():
        assert len(family["runs"]) == 2 * 3  # sizes x methods
        assert set(family["curves"]) == {"frozen", "full", "scratch"}
        for run in family["runs"]:
            assert 0.0 <= run["contrast_accuracy"] <= 1.0 and 0.0 <= run["accuracy"] <= 1.0
    json.dumps(out)  # plain data all the way down


def test_ner_and_few_shot_are_well_formed(results):
    ner = results["ner"]
    assert [r["method"] for r in ner["runs"]] == ["frozen", "full", "scratch"]
    for run in ner["runs"]:
        assert 0.0 <= run["f1"] <= 1.0 and 0.0 <= run["token_accuracy"] <= 1.0
    few = results["few-shot"]
    assert list(few["accuracy"]) == ["0", "1", "2"]
    assert few["prompt_tokens"]["0"] < few["prompt_tokens"]["1"] < few["prompt_tokens"]["2"]
    assert list(few["label_mass"]) == ["0", "1", "2"] and all(0.0 < m <= 1.0 for m in few["label_mass"].values())
    json.dumps(ner), json.dumps(few)


def test_few_shot_scores_read_the_next_token_distribution_after_each_prompt():
    tokenizer = WordTokenizer(few_shot_vocabulary())
    gpt = new_body("gpt", tokenizer.vocab_size, MODEL | {"max_len": 64}, seed=0)
    prompts = few_shot_prompts([1], 12)[1]
    scores = few_shot_scores(gpt, tokenizer, prompts, batch_size=5)  # batches of 5, 5 and 2
    ids = [[BOS_ID, *tokenizer.encode(" ".join(p))] for p, _, _ in prompts]
    with no_grad(), eval_mode(gpt):  # as few_shot_scores reads it: dropout off
        logits = gpt(pad_batch(ids, PAD_ID)[0]).numpy().astype(np.float64)[np.arange(12), [len(i) - 1 for i in ids]]
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    good, bad = ([tokenizer.token_to_id(t[i]) for t in prompts] for i in (1, 2))
    every = [tokenizer.token_to_id(w) for pair in FEW_SHOT_LABEL_WORDS for w in pair]
    assert scores["accuracy"] == np.mean(logits[np.arange(12), good] > logits[np.arange(12), bad])
    np.testing.assert_allclose(scores["label_mass"], np.mean(probs[np.arange(12), good] + probs[np.arange(12), bad]))
    np.testing.assert_allclose(scores["all_label_mass"], np.mean(probs[:, every].sum(axis=1)))
    assert 0 < scores["label_mass"] < scores["all_label_mass"] < 1


def test_experiments_are_reproducible(results):
    again = few_shot_curve(log=_quiet, **QUICK_SETTINGS["few-shot"])
    assert again["accuracy"] == results["few-shot"]["accuracy"]
    assert again["pretrain_final_loss"] == results["few-shot"]["pretrain_final_loss"]


def test_few_shot_prompts_share_queries_and_examples_across_k():
    prompts = few_shot_prompts((0, 2, 4), prompts=5)
    for i in range(5):
        zero, two, four = prompts[0][i], prompts[2][i], prompts[4][i]
        assert zero[1:] == two[1:] == four[1:]  # the same label words
        assert four[0][-len(zero[0]):] == two[0][-len(zero[0]):] == zero[0]  # the same query at the end
        assert four[0][:len(two[0]) - len(zero[0])] == two[0][:-len(zero[0])]  # k = 2's examples start k = 4's


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_body_fine_tuning_changes_only_the_head(family, frozen):
    tokenizer = WordTokenizer(sentiment_vocabulary())
    body = new_body(family, tokenizer.vocab_size, MODEL, seed=0)
    model = classifier(family, body)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    fine_tune(model, body, sentiment_examples(16, seed=0), sentiment_loss(family, tokenizer), frozen,
              steps=3, batch_size=8, lr=1e-2, warmup=1)
    after = model.state_dict()
    body_keys = [k for k in before if k.startswith(family + ".")]
    head_keys = [k for k in before if k.startswith("classifier.")]
    assert body_keys and head_keys and len(body_keys) + len(head_keys) == len(before)
    assert all(not np.array_equal(before[k], after[k]) for k in head_keys)
    unchanged = [k for k in body_keys if np.array_equal(before[k], after[k])]
    if frozen:
        assert unchanged == body_keys  # bit for bit, every one of them
    else:
        assert len(unchanged) < len(body_keys) / 2


def test_fine_tuning_with_frozen_none_keeps_the_callers_choice_and_calls_the_hook():
    tokenizer = WordTokenizer(sentiment_vocabulary())
    body = new_body("gpt", tokenizer.vocab_size, MODEL, seed=0)
    model = classifier("gpt", body)
    body.requires_grad_(True)
    body.tok_emb.requires_grad_(False)  # freeze the token embeddings only
    before = {k: v.copy() for k, v in model.state_dict().items()}
    steps_seen = []
    fine_tune(model, body, sentiment_examples(16, seed=0), sentiment_loss("gpt", tokenizer), None,
              steps=3, batch_size=8, lr=1e-2, warmup=1, on_step=lambda step, m: steps_seen.append(step))
    after = model.state_dict()
    embedding = [k for k in before if k.startswith("gpt.tok_emb.")]
    rest = [k for k in before if k.startswith("gpt.") and k not in embedding]
    assert embedding and all(np.array_equal(before[k], after[k]) for k in embedding)
    assert sum(not np.array_equal(before[k], after[k]) for k in rest) > len(rest) / 2
    assert steps_seen == [1, 2, 3]


def test_command_line_writes_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "few.json", tmp_path / "few.png"
    assert main(["few-shot", "--quick", "--json", str(out), "--plot", str(png)]) == 0
    assert set(json.loads(out.read_text())["accuracy"]) == {"0", "1", "2"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):
        main(["ner", "--plot", str(png)])
    assert "has no figure" in capsys.readouterr().err


def test_accuracy_without_contrast_reviews_is_none_not_nan():
    tokenizer = WordTokenizer(sentiment_vocabulary())
    body = new_body("gpt", tokenizer.vocab_size, MODEL, seed=0)
    plain = sentiment_examples(20, seed=0, forms=["single"])
    result = accuracy("gpt", classifier("gpt", body), plain, tokenizer)
    assert result["contrast_accuracy"] is None and 0.0 <= result["accuracy"] <= 1.0


def test_few_shot_pretraining_can_mix_in_rated_reviews():
    settings = {**QUICK_SETTINGS["few-shot"], "rated_fraction": 0.5}
    result = few_shot_curve(log=_quiet, **settings)
    assert result["settings"]["rated_fraction"] == 0.5 and set(result["label_mass"]) == set(result["accuracy"])


def test_fit_calls_on_step_after_each_step_and_stops_when_it_says_so():
    tokenizer = WordTokenizer(sentiment_vocabulary())
    model = classifier("gpt", new_body("gpt", tokenizer.vocab_size, MODEL, seed=0))
    examples = sentiment_examples(16, seed=0)
    seen = []

    def on_step(step, m):
        seen.append((step, m is model, m.training))
        return step == 3

    losses = fit(model, sentiment_loss("gpt", tokenizer), lambda step: examples[:8], steps=10, lr=1e-3,
                 on_step=on_step)
    assert len(losses) == 3 and seen == [(1, True, True), (2, True, True), (3, True, True)]
