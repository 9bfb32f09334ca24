"""A small encoder-decoder learns to copy: the smallest end-to-end proof that training works."""
import numpy as np

import nptransformer as nt
import nptransformer.functional as F
from nptransformer import nn
from nptransformer.data import pad_batch
from nptransformer.optim import Adam

PAD, BOS, EOS = 0, 1, 2


def _greedy(model, src, steps):
    """Decode every source at once, one token per step, always taking the most likely token."""
    out = np.full((len(src), 1), BOS, dtype=np.int64)
    with nt.no_grad():
        memory = model.encode(src)
        for _ in range(steps):
            logits = model.decode(out, memory, memory_key_padding_mask=src == PAD)
            out = np.concatenate([out, logits.data[:, -1].argmax(-1)[:, None]], axis=1)
    return out[:, 1:]


def test_seq2seq_learns_a_16_example_copy_task_to_100_percent():
    nn.manual_seed(0)
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(3, 10, size=rng.integers(3, 6))) for _ in range(16)]
    src, _ = pad_batch(seqs, PAD)
    tgt_in, _ = pad_batch([[BOS] + s for s in seqs], PAD)
    tgt_out, _ = pad_batch([s + [EOS] for s in seqs], PAD)
    model = nn.Seq2SeqTransformer(10, 10, d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=1,
                                  dim_feedforward=64, dropout=0.0, max_len=16, pad_id=PAD)
    opt = Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = F.cross_entropy(model(src, tgt_in), tgt_out, ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    pred = _greedy(model, src, tgt_out.shape[1])
    correct = [list(p[: len(s) + 1]) == s + [EOS] for p, s in zip(pred, seqs)]
    assert loss.item() < 0.05
    assert all(correct), f"{sum(correct)}/16 copied"
