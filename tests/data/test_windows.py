"""Long inputs: truncation, sliding windows (every token new exactly once), pooling, and the
strided likelihood of a causal language model checked against scoring each token by hand."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nptransformer import nn
from nptransformer.autograd import no_grad
from nptransformer.data.windows import pool_windows, sliding_windows, strided_token_nll, truncate


# ----------------------------------------------------------------------------- truncate
def test_truncate_keeps_the_head_the_tail_or_both():
    ids = list(range(10))
    assert truncate(ids, 4).tolist() == [0, 1, 2, 3]
    assert truncate(ids, 4, "tail").tolist() == [6, 7, 8, 9]
    assert truncate(ids, 4, "head+tail", head=1).tolist() == [0, 7, 8, 9]
    assert truncate(ids, 8, "head+tail").tolist() == [0, 1, 4, 5, 6, 7, 8, 9]  # head = 8 // 4
    assert truncate(ids, 4, "head+tail", head=0).tolist() == truncate(ids, 4, "tail").tolist()
    assert truncate(ids, 4, "head+tail", head=4).tolist() == truncate(ids, 4, "head").tolist()


@pytest.mark.parametrize("side", ["head", "tail", "head+tail"])
def test_truncate_returns_a_short_text_whole_and_an_empty_one_empty(side):
    assert truncate(np.array([5, 6, 7]), 3, side).tolist() == [5, 6, 7]
    assert truncate([5, 6], 10, side).tolist() == [5, 6]
    out = truncate([], 4, side)
    assert out.shape == (0,) and out.dtype == np.int64


@given(st.lists(st.integers(0, 99), max_size=40), st.integers(1, 20), st.sampled_from(["head", "tail", "head+tail"]))
def test_truncate_keeps_min_of_length_and_max_len_tokens_in_order(ids, max_len, side):
    out = truncate(ids, max_len, side).tolist()
    assert len(out) == min(len(ids), max_len)
    positions = iter(range(len(ids)))  # `out` is a subsequence of `ids`
    assert all(any(ids[i] == token for i in positions) for token in out)


def test_truncate_checks_its_arguments():
    with pytest.raises(ValueError, match="truncate: max_len must be an integer >= 1, got 0"):
        truncate([1, 2], 0)
    with pytest.raises(ValueError, match="truncate: side must be one of"):
        truncate([1, 2], 1, side="middle")
    with pytest.raises(ValueError, match="truncate: head must be an integer from 0 to 4, got 5"):
        truncate([1, 2], 4, "head+tail", head=5)
    with pytest.raises(ValueError, match="only used with side='head\\+tail'"):
        truncate([1, 2], 4, "head", head=1)
    with pytest.raises(ValueError, match="truncate: ids must be a 1-D sequence of integer token ids"):
        truncate([[1, 2]], 4)
    with pytest.raises(ValueError, match="dtype float64"):
        truncate([1.5, 2.0], 4)


# ----------------------------------------------------------------------------- sliding_windows
@given(st.integers(0, 60), st.integers(1, 12), st.data())
def test_every_token_is_new_in_exactly_one_window(n, window, data):
    stride = data.draw(st.integers(1, window))
    ids = np.arange(100, 100 + n)
    windows = sliding_windows(ids, window, stride)
    new = np.concatenate([w.new_ids for w in windows]) if windows else np.array([], dtype=np.int64)
    assert new.tolist() == ids.tolist()  # each token once, in order
    for k, w in enumerate(windows):
        assert 1 <= w.ids.size <= window
        assert w.ids.tolist() == ids[w.start:w.start + w.ids.size].tolist()
        assert w.start == k * stride
        assert 0 <= w.n_context < w.ids.size
        assert w.n_context == (0 if k == 0 else min(window - stride, w.ids.size))
    if windows:
        assert windows[-1].start + windows[-1].ids.size == n  # the last window reaches the end
        assert all(w.ids.size == window for w in windows[:-1])


def test_sliding_windows_edge_cases():
    assert sliding_windows([], 4, 2) == []
    (only,) = sliding_windows([7, 8, 9], 4, 2)  # shorter than the window: one window, all new
    assert (only.start, only.ids.tolist(), only.n_context) == (0, [7, 8, 9], 0)
    (exact,) = sliding_windows(range(4), 4, 1)  # as long as the window: still one
    assert exact.ids.tolist() == [0, 1, 2, 3]
    chunks = sliding_windows(range(10), 4, 4)  # stride == window: disjoint chunks, no context
    assert [w.ids.tolist() for w in chunks] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [w.n_context for w in chunks] == [0, 0, 0]
    overlapping = sliding_windows(range(10), 4, 2)  # the module docstring's example
    assert [(w.start, w.n_context) for w in overlapping] == [(0, 0), (2, 2), (4, 2), (6, 2)]
    assert [w.new_ids.tolist() for w in overlapping] == [[0, 1, 2, 3], [4, 5], [6, 7], [8, 9]]
    last_short = sliding_windows(range(8), 5, 2)  # the last window is cut by the end
    assert [w.ids.tolist() for w in last_short] == [[0, 1, 2, 3, 4], [2, 3, 4, 5, 6], [4, 5, 6, 7]]
    assert [w.n_context for w in last_short] == [0, 3, 3]


def test_sliding_windows_checks_its_arguments():
    with pytest.raises(ValueError, match=r"sliding_windows: stride must be an integer from 1 to 4, got 5 "
                                         r"\(a stride larger than the window would skip"):
        sliding_windows(range(10), 4, 5)
    with pytest.raises(ValueError, match="sliding_windows: stride must be an integer from 1 to 4, got 0"):
        sliding_windows(range(10), 4, 0)
    with pytest.raises(ValueError, match="sliding_windows: window must be an integer >= 1, got 0"):
        sliding_windows(range(10), 0, 1)
    with pytest.raises(ValueError, match="sliding_windows: window must be an integer >= 1, got 2.0"):
        sliding_windows(range(10), 2.0, 1)
    with pytest.raises(ValueError, match="sliding_windows: ids must be a 1-D sequence"):
        sliding_windows(np.zeros((2, 3), dtype=np.int64), 4, 2)


# ----------------------------------------------------------------------------- pool_windows
def test_pool_windows_mean_weighted_mean_and_max():
    values = np.array([[1.0, 4.0], [3.0, 0.0]])  # (W=2, C=2)
    assert pool_windows(values).tolist() == [2.0, 2.0]
    assert pool_windows(values, "max").tolist() == [3.0, 4.0]
    assert np.allclose(pool_windows(values, weights=[3, 1]), [1.5, 3.0])
    assert pool_windows([[5.0, 6.0]], "max").tolist() == [5.0, 6.0]  # one window: itself
    assert pool_windows([2.0, 4.0]) == 3.0  # (W,) -> a scalar


def test_pool_windows_checks_its_arguments():
    with pytest.raises(ValueError, match="pool_windows: values must be a numeric array"):
        pool_windows(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="pool_windows: how must be one of"):
        pool_windows([[1.0]], how="median")
    with pytest.raises(ValueError, match="pool_windows: weights must be 2 non-negative numbers"):
        pool_windows([[1.0], [2.0]], weights=[1.0])
    with pytest.raises(ValueError, match="not all zero"):
        pool_windows([[1.0], [2.0]], weights=[0.0, 0.0])
    with pytest.raises(ValueError, match="weights are only used with how='mean'"):
        pool_windows([[1.0], [2.0]], "max", weights=[1, 1])


# ----------------------------------------------------------------------------- strided_token_nll
@pytest.fixture(scope="module")
def gpt():
    nn.manual_seed(0)
    return nn.GPT(11, d_model=16, n_layers=1, n_heads=2, max_len=6).eval()


def _by_hand(gpt, ids, window, stride):
    """Each token's -log p, scored one window at a time with the windows of sliding_windows."""
    nll, context = {}, {}
    for w in sliding_windows(ids[:-1], window, stride):
        with no_grad():
            logits = gpt(w.ids[None, :]).numpy()[0].astype(np.float64)  # (T, V)
        top = logits.max(axis=-1, keepdims=True)
        log_p = logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))  # log-softmax
        for t in range(w.n_context, w.ids.size):
            j = w.start + t  # input position; it predicts ids[j + 1]
            nll[j], context[j] = -log_p[t, ids[j + 1]], t + 1
    return np.array([nll[j] for j in range(len(ids) - 1)]), np.array([context[j] for j in range(len(ids) - 1)])


@pytest.mark.parametrize("stride", [1, 2, 4, 6])
def test_strided_token_nll_scores_every_token_once_with_its_window_context(gpt, stride):
    ids = np.random.default_rng(0).integers(0, 11, size=23)
    scores = strided_token_nll(gpt, ids, window=6, stride=stride, batch_size=3)
    nll, context = _by_hand(gpt, ids, 6, stride)
    assert scores.nll.shape == scores.context.shape == (22,)
    assert np.allclose(scores.nll, nll, atol=1e-5)
    assert scores.context.tolist() == context.tolist()
    assert np.isclose(scores.perplexity(), np.exp(nll.mean()), rtol=1e-5)


def test_strided_token_nll_context_grows_as_the_stride_shrinks(gpt):
    ids = np.arange(30) % 11
    disjoint = strided_token_nll(gpt, ids, 6, 6).context
    assert disjoint.tolist() == [1, 2, 3, 4, 5, 6] * 4 + [1, 2, 3, 4, 5]
    one = strided_token_nll(gpt, ids, 6, 1).context
    assert one.tolist() == [1, 2, 3, 4, 5] + [6] * 24  # every token after the first window sees 6
    short = strided_token_nll(gpt, [3, 4], 6, 2)  # shorter than a window: one token scored
    assert short.nll.shape == (1,) and short.context.tolist() == [1]


def test_strided_token_nll_checks_its_arguments(gpt):
    with pytest.raises(ValueError, match="strided_token_nll: ids must hold at least 2 tokens"):
        strided_token_nll(gpt, [3], 6, 2)
    with pytest.raises(ValueError, match="strided_token_nll: batch_size must be an integer >= 1"):
        strided_token_nll(gpt, [3, 4, 5], 6, 2, batch_size=0)
    with pytest.raises(ValueError, match="sliding_windows: stride must be an integer from 1 to 6, got 7"):
        strided_token_nll(gpt, [3, 4, 5], 6, 7)
