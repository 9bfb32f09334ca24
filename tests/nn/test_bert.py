"""BERT: embeddings, padding, the pooler, and the heads for pre-training and fine-tuning."""
import numpy as np
import pytest

import nptransformer as nt
import nptransformer.functional as F
from nptransformer import nn


@pytest.fixture
def bert():
    nn.manual_seed(0)
    return nn.BERT(vocab_size=20, d_model=16, n_layers=2, n_heads=2, max_len=12, dropout=0.0).eval()


def test_shapes_and_heads(bert):
    ids = np.array([[1, 5, 6, 7, 2, 0, 0], [1, 8, 9, 2, 0, 0, 0]])
    seq, pooled = bert(ids)
    assert seq.shape == (2, 7, 16) and pooled.shape == (2, 16)
    assert np.all(np.abs(pooled.data) <= 1.0)  # tanh
    mlm = nn.BertForMaskedLM(bert)
    assert mlm(ids).shape == (2, 7, 20)
    assert nn.BertForSequenceClassification(bert, 3)(ids).shape == (2, 3)
    assert nn.BertForTokenClassification(bert, 4)(ids).shape == (2, 7, 4)
    names = [n for n, _ in mlm.named_parameters()]
    assert "bert.embeddings.word_embeddings.weight" in names and not any(n.startswith("decoder.weight") for n in names)


def test_padding_does_not_change_real_tokens(bert):
    short = np.array([[1, 5, 6, 2]])
    padded = np.array([[1, 5, 6, 2, 0, 0, 0]])
    a, _ = bert(short)
    b, _ = bert(padded)
    np.testing.assert_allclose(a.data, b.data[:, :4], rtol=1e-5, atol=1e-6)
    c, _ = bert(padded, attention_mask=np.array([[1, 1, 1, 1, 0, 0, 0]]))
    np.testing.assert_allclose(b.data, c.data, rtol=1e-6)


def test_token_types_change_the_output(bert):
    ids = np.array([[1, 5, 2, 6, 2]])
    a, _ = bert(ids)
    b, _ = bert(ids, token_type_ids=np.array([[0, 0, 0, 1, 1]]))
    assert not np.allclose(a.data[:, 3:], b.data[:, 3:])


def test_frozen_body_gets_no_update_but_the_head_trains(bert):
    from nptransformer.optim import Adam

    model = nn.BertForSequenceClassification(bert, 2, dropout=0.0)
    model.bert.requires_grad_(False)
    body = {n: p.data.copy() for n, p in model.bert.named_parameters()}
    head = model.classifier.weight.data.copy()
    opt = Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = np.array([[1, 5, 6, 2], [1, 7, 8, 2]])
    for _ in range(3):
        loss = F.cross_entropy(model(ids), np.array([0, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in model.bert.named_parameters():
        np.testing.assert_array_equal(p.data, body[n])
        assert p.grad is None
    assert not np.array_equal(model.classifier.weight.data, head)
