"""Batching: padding and its mask, the causal mask (checked against torch.nn's convention),
seq2seq teacher-forcing batches and language-model windows."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nptransformer.data import BOS_ID, EOS_ID, PAD_ID, causal_mask, lm_batches, pad_batch, seq2seq_batch


@given(st.lists(st.lists(st.integers(1, 10**12), max_size=9), min_size=1, max_size=6))
def test_pad_batch_keeps_every_sequence_and_marks_exactly_the_padding(seqs):
    ids, mask = pad_batch(seqs, pad_id=0)
    T = max(len(s) for s in seqs)
    assert ids.shape == mask.shape == (len(seqs), T)
    assert ids.dtype == np.int64 and mask.dtype == bool
    for row, s in enumerate(seqs):
        assert ids[row, : len(s)].tolist() == s
        assert not mask[row, : len(s)].any() and mask[row, len(s) :].all()
    assert (ids[mask] == 0).all()


def test_pad_batch_takes_arrays_and_checks_its_input():
    ids, mask = pad_batch([np.array([3, 4]), np.array([], dtype=np.int64), [5]], pad_id=9)
    assert ids.tolist() == [[3, 4], [9, 9], [5, 9]]
    assert mask.tolist() == [[False, False], [True, True], [False, True]]
    assert pad_batch([[], []], pad_id=0)[0].shape == (2, 0)
    with pytest.raises(ValueError, match="no sequences"):
        pad_batch([], pad_id=0)
    with pytest.raises(ValueError, match="must be integers"):
        pad_batch([[1.5, 2.0]], pad_id=0)


def test_causal_mask_marks_the_future():
    assert causal_mask(3).tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    assert causal_mask(0).shape == (0, 0)
    # With a cache, T new queries are the last T of S positions: the rows of the full mask.
    assert (causal_mask(2, 5) == causal_mask(5)[-2:]).all()
    assert not causal_mask(1, 7).any()  # one new token may see everything before it
    with pytest.raises(ValueError, match="0 <= T <= S"):
        causal_mask(4, 3)


def test_masks_follow_torch_nn_conventions(torch):
    T, C = 5, 8
    # nn.Transformer's own causal mask puts -inf exactly where ours says True.
    assert (torch.nn.Transformer.generate_square_subsequent_mask(T).isinf().numpy() == causal_mask(T)).all()
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(C, num_heads=2, batch_first=True).double()
    x = torch.randn(2, T, C, dtype=torch.float64)
    with torch.no_grad():
        out_bool, _ = mha(x, x, x, attn_mask=torch.from_numpy(causal_mask(T)))
        out_causal, _ = mha(x, x, x, attn_mask=torch.nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64))
        assert torch.allclose(out_bool, out_causal, atol=1e-12)
        # key_padding_mask True = padding: the padded row attends as if the padding were not there.
        ids, padding = pad_batch([[1, 2, 3, 4, 5], [6, 7, 8]], pad_id=PAD_ID)
        out_padded, _ = mha(x, x, x, key_padding_mask=torch.from_numpy(padding))
        short = x[1:, :3]
        out_alone, _ = mha(short, short, short)
        assert torch.allclose(out_padded[1, :3], out_alone[0], atol=1e-12)
        # scaled_dot_product_attention reads bool masks the other way: True = may attend.
        q = x.unsqueeze(1)  # (B, 1, T, C)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        allowed = torch.from_numpy(~causal_mask(T))
        assert torch.allclose(sdpa(q, q, q, attn_mask=allowed), sdpa(q, q, q, is_causal=True), atol=1e-12)


def test_seq2seq_batch_shifts_the_target_by_one():
    batch = seq2seq_batch([[10, 11, 12], [13]], [[20], [21, 22, 23]], pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)
    assert batch.src.tolist() == [[10, 11, 12], [13, PAD_ID, PAD_ID]]
    assert batch.src_padding_mask.tolist() == [[False, False, False], [False, True, True]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 20, PAD_ID, PAD_ID], [BOS_ID, 21, 22, 23]]
    assert batch.tgt_out.tolist() == [[20, EOS_ID, PAD_ID, PAD_ID], [21, 22, 23, EOS_ID]]
    assert batch.tgt_padding_mask.tolist() == [[False, False, True, True], [False, False, False, False]]
    assert ((batch.tgt_out == PAD_ID) == batch.tgt_padding_mask).all()
    real = ~batch.tgt_padding_mask
    assert (batch.tgt_in[:, 1:][real[:, 1:]] == batch.tgt_out[:, :-1][real[:, 1:]]).all()  # teacher forcing
    with pytest.raises(ValueError, match="2 source sequences but 1 targets"):
        seq2seq_batch([[1], [2]], [[3]], PAD_ID, BOS_ID, EOS_ID)


def test_lm_batches_are_random_windows_with_shifted_targets():
    data = np.arange(100, 150)  # token i is 100 + i, so a window is a run of consecutive numbers
    batches = list(lm_batches(data, batch_size=4, context=8, seed=0, num_batches=300))
    assert len(batches) == 300
    starts = set()
    for inputs, targets in batches:
        assert inputs.shape == targets.shape == (4, 8) and inputs.dtype == targets.dtype == np.int64
        assert (targets == inputs + 1).all()  # the target is the next token
        assert (np.diff(inputs, axis=1) == 1).all()  # each row is a contiguous window
        starts.update((inputs[:, 0] - 100).tolist())
    assert starts == set(range(50 - 8))  # every window start in [0, N - context - 1], and no other
    again = next(lm_batches(data, batch_size=4, context=8, seed=0))
    assert (again[0] == batches[0][0]).all()


def test_lm_batches_check_their_input():
    with pytest.raises(ValueError, match="cannot fill a window"):
        next(lm_batches([1, 2, 3], batch_size=2, context=3, seed=0))
    with pytest.raises(ValueError, match="1-D sequence of integers"):
        next(lm_batches(np.zeros((4, 4), dtype=np.int64), batch_size=2, context=2, seed=0))
    with pytest.raises(ValueError, match="must be >= 1"):
        next(lm_batches([1, 2, 3], batch_size=0, context=1, seed=0))
