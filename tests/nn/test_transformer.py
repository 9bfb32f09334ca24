"""The Transformer family against PyTorch, with weights copied across by nptransformer.interop."""
import numpy as np
import pytest

import nptransformer as nt
from nptransformer import nn
from nptransformer.interop import load_torch_state_dict, to_torch_state_dict

pytestmark = pytest.mark.torch


def _source_encoder_layer(torch):
    """The source's §5.1 TransformerEncoderLayer, verbatim (sequence-first, as written there)."""
    tnn, F = torch.nn, torch.nn.functional

    class TransformerEncoderLayer(tnn.Module):
        def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1):
            super().__init__()
            self.self_attn = tnn.MultiheadAttention(d_model, nhead, dropout=dropout)
            self.linear1 = tnn.Linear(d_model, dim_feedforward)
            self.dropout = tnn.Dropout(dropout)
            self.linear2 = tnn.Linear(dim_feedforward, d_model)
            self.norm1 = tnn.LayerNorm(d_model)
            self.norm2 = tnn.LayerNorm(d_model)
            self.dropout1 = tnn.Dropout(dropout)
            self.dropout2 = tnn.Dropout(dropout)

        def forward(self, src, src_mask=None, src_key_padding_mask=None):
            src2 = self.self_attn(src, src, src, attn_mask=src_mask, key_padding_mask=src_key_padding_mask)[0]
            src = src + self.dropout1(src2)
            src = self.norm1(src)
            src2 = self.linear2(self.dropout(F.relu(self.linear1(src))))
            src = src + self.dropout2(src2)
            src = self.norm2(src)
            return src

    return TransformerEncoderLayer


def _torch_grads(module):
    return {k: p.grad.numpy() for k, p in module.named_parameters()}


def _our_grads_in_torch_names(module):
    """Our parameter gradients, renamed and packed as torch names them."""
    saved = {n: p.data for n, p in module.named_parameters()}
    for _, p in module.named_parameters():
        p.data = p.grad
    grads = to_torch_state_dict(module)
    for n, p in module.named_parameters():
        p.data = saved[n]
    return grads


def _compare(ours, theirs, rtol, atol):
    assert set(ours) == set(theirs)
    for k in theirs:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=rtol, atol=atol, err_msg=k)


@pytest.mark.parametrize("dtype,rtol,atol", [(np.float64, 1e-8, 1e-10), (np.float32, 1e-4, 1e-5)])
def test_source_encoder_layer_matches_pytorch(torch, dtype, rtol, atol):
    B, T, E, H = 3, 5, 16, 4
    ref = _source_encoder_layer(torch)(E, H, dim_feedforward=32, dropout=0.0).to(getattr(torch, np.dtype(dtype).name))
    ours = nn.TransformerEncoderLayer(E, H, dim_feedforward=32, dropout=0.0)
    load_torch_state_dict(ours, ref.state_dict())
    for p in ours.parameters():
        p.data = p.data.astype(dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, E)).astype(dtype)
    padding = np.zeros((B, T), dtype=bool)
    padding[1, 3:] = True
    attn_mask = np.triu(np.ones((T, T), dtype=bool), 1)
    xt = torch.tensor(x.transpose(1, 0, 2).copy(), requires_grad=True)  # the source is (T, B, E)
    out_t = ref(xt, src_mask=torch.tensor(attn_mask), src_key_padding_mask=torch.tensor(padding))
    xo = nt.Tensor(x, requires_grad=True)
    out_o = ours(xo, src_mask=attn_mask, src_key_padding_mask=padding)
    np.testing.assert_allclose(out_o.data, out_t.detach().numpy().transpose(1, 0, 2), rtol=rtol, atol=atol)
    upstream = rng.standard_normal(out_o.shape).astype(dtype)
    out_t.backward(torch.tensor(upstream.transpose(1, 0, 2).copy()))
    out_o.backward(upstream)
    np.testing.assert_allclose(xo.grad, xt.grad.numpy().transpose(1, 0, 2), rtol=rtol, atol=atol)
    _compare(_our_grads_in_torch_names(ours), _torch_grads(ref), rtol, atol)


@pytest.mark.parametrize("dtype,rtol,atol", [(np.float64, 1e-8, 1e-10), (np.float32, 1e-4, 1e-5)])
def test_full_transformer_with_padding_and_causal_masks_matches_pytorch(torch, dtype, rtol, atol):
    B, S, T, E, H = 2, 6, 5, 16, 4
    kw = dict(d_model=E, nhead=H, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=24, dropout=0.0)
    ref = torch.nn.Transformer(batch_first=True, **kw).to(getattr(torch, np.dtype(dtype).name))
    ref.train()  # dropout is 0; train mode keeps torch off its nested-tensor fast path
    ours = nn.Transformer(**kw)
    load_torch_state_dict(ours, ref.state_dict())
    for p in ours.parameters():
        p.data = p.data.astype(dtype)
    rng = np.random.default_rng(1)
    src = rng.standard_normal((B, S, E)).astype(dtype)
    tgt = rng.standard_normal((B, T, E)).astype(dtype)
    src_pad = np.zeros((B, S), dtype=bool)
    src_pad[0, 4:] = True
    tgt_pad = np.zeros((B, T), dtype=bool)
    tgt_pad[1, 3:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(T).astype(dtype)
    st_, tt_ = torch.tensor(src, requires_grad=True), torch.tensor(tgt, requires_grad=True)
    out_t = ref(st_, tt_, tgt_mask=torch.tensor(causal), src_key_padding_mask=torch.tensor(src_pad),
                tgt_key_padding_mask=torch.tensor(tgt_pad), memory_key_padding_mask=torch.tensor(src_pad))
    so, to = nt.Tensor(src, requires_grad=True), nt.Tensor(tgt, requires_grad=True)
    out_o = ours(so, to, tgt_mask=causal, src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
                 memory_key_padding_mask=src_pad)
    np.testing.assert_allclose(out_o.data, out_t.detach().numpy(), rtol=rtol, atol=atol)
    upstream = rng.standard_normal(out_o.shape).astype(dtype)
    out_t.backward(torch.tensor(upstream))
    out_o.backward(upstream)
    np.testing.assert_allclose(so.grad, st_.grad.numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(to.grad, tt_.grad.numpy(), rtol=rtol, atol=atol)
    _compare(_our_grads_in_torch_names(ours), _torch_grads(ref), rtol, atol)
    assert set(to_torch_state_dict(ours)) == set(ref.state_dict())


def test_gpt_block_matches_a_pytorch_reference(torch):
    tnn = torch.nn

    class RefBlock(tnn.Module):  # pre-LN causal block, GELU MLP, as GPT-2
        def __init__(self, E, H, ff):
            super().__init__()
            self.ln1, self.ln2 = tnn.LayerNorm(E), tnn.LayerNorm(E)
            self.attn = tnn.MultiheadAttention(E, H, batch_first=True)
            self.linear1, self.linear2 = tnn.Linear(E, ff), tnn.Linear(ff, E)

        def forward(self, x):
            T = x.shape[1]
            mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
            h = self.ln1(x)
            x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
            return x + self.linear2(torch.nn.functional.gelu(self.linear1(self.ln2(x))))

    E, H, ff = 16, 4, 40
    ref = RefBlock(E, H, ff).double()
    ours = nn.GPTBlock(E, H, ff)
    sd = {k.replace("linear", "mlp.linear"): v for k, v in ref.state_dict().items()}
    load_torch_state_dict(ours, sd)
    for p in ours.parameters():
        p.data = p.data.astype(np.float64)
    x = np.random.default_rng(2).standard_normal((2, 7, E))
    xt = torch.tensor(x, requires_grad=True)
    xo = nt.Tensor(x, requires_grad=True)
    out_t, out_o = ref(xt), ours(xo)
    np.testing.assert_allclose(out_o.data, out_t.detach().numpy(), rtol=1e-8, atol=1e-10)
    out_t.sum().backward()
    out_o.sum().backward()
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), rtol=1e-8, atol=1e-10)


def test_load_torch_state_dict_lists_bad_keys(torch):
    ref = torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
    ours = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    sd = dict(ref.state_dict())
    del sd["linear1.bias"]
    sd["unknown.weight"] = np.zeros(3)
    sd["norm1.weight"] = np.zeros(5)
    with pytest.raises(nn.ModuleError) as err:
        load_torch_state_dict(ours, sd)
    msg = str(err.value)
    assert "missing keys: linear1.bias" in msg and "unexpected keys: unknown.weight" in msg
    assert "norm1.weight: expected (8,), got (5,)" in msg
    sd = dict(ref.state_dict())
    sd["self_attn.in_proj_weight"] = np.zeros((10, 8))
    with pytest.raises(ValueError, match="in_proj_weight has shape"):
        load_torch_state_dict(ours, sd)
