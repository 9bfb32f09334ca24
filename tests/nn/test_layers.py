"""Layers and the models built from them: shapes, the source's formulas, and bad input."""
import math

import numpy as np
import pytest

import nptransformer as nt
from nptransformer import nn
from nptransformer.nn import ModuleError


def test_positional_encoding_is_the_source_formula_element_wise():
    max_len, d_model = 50, 16
    table = nn.sinusoidal_table(max_len, d_model, dtype=np.float64)
    for pos in range(max_len):
        for i in range(d_model // 2):
            angle = pos / 10000 ** (2 * i / d_model)
            assert table[pos, 2 * i] == pytest.approx(math.sin(angle), abs=1e-12)
            assert table[pos, 2 * i + 1] == pytest.approx(math.cos(angle), abs=1e-12)
    pe = nn.PositionalEncoding(d_model, max_len=max_len)
    x = nt.Tensor(np.zeros((2, 7, d_model), dtype=np.float32))
    np.testing.assert_allclose(pe(x).data[1], table[:7], atol=1e-6)
    assert "pe" not in pe.state_dict()  # recomputed, not saved


def test_relative_position_property_of_the_sinusoids():
    """PE(pos + k) is a fixed rotation of PE(pos): each (sin, cos) pair turns by k·ω_i."""
    d_model, k = 8, 3
    table = nn.sinusoidal_table(40, d_model, dtype=np.float64)
    for i in range(d_model // 2):
        w = 1 / 10000 ** (2 * i / d_model)
        rot = np.array([[math.cos(k * w), -math.sin(k * w)], [math.sin(k * w), math.cos(k * w)]])
        pairs = table[:, 2 * i : 2 * i + 2]
        np.testing.assert_allclose(pairs[:-k] @ rot, pairs[k:], atol=1e-12)


def test_module_tree_names_state_and_modes():
    model = nn.GPT(vocab_size=11, d_model=8, n_layers=2, n_heads=2, max_len=6)
    names = [n for n, _ in model.named_parameters()]
    assert names[0] == "tok_emb.weight"
    assert "blocks.1.attn.q_proj.weight" in names
    assert "head.weight" not in names  # tied to tok_emb.weight, listed once
    sd = model.state_dict()
    assert sd["head.weight"] is sd["tok_emb.weight"]
    assert model.num_parameters() == sum(p.size for p in model.parameters())
    model.eval()
    assert all(not m.training for m in model.modules())
    model.train()
    assert model.blocks[0].attn.training
    model.blocks.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) < model.num_parameters()
    text = repr(model)
    assert text.startswith("GPT(") and "(blocks): ModuleList(" in text and "(q_proj): Linear(in_features=8" in text
    with pytest.raises(AttributeError):
        model.blocks_typo


def test_sequential_and_module_list():
    seq = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    assert seq(nt.Tensor(np.ones((5, 3), dtype=np.float32))).shape == (5, 2)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert len(seq) == 2 and isinstance(seq[1], nn.Linear)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_save_and_load_round_trip(tmp_path, suffix):
    a = nn.Seq2SeqTransformer(10, 12, d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16)
    b = nn.Seq2SeqTransformer(10, 12, d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16)
    path = tmp_path / f"model{suffix}"
    a.save(path)
    b.load(path)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb
        np.testing.assert_array_equal(pa.data, pb.data)


def test_load_state_dict_lists_missing_unexpected_and_misshaped_keys():
    model = nn.Linear(3, 2)
    with pytest.raises(ModuleError) as err:
        model.load_state_dict({"weight": np.zeros((2, 4)), "extra": np.zeros(1)})
    msg = str(err.value)
    assert "weight: expected (2, 3), got (2, 4)" in msg and "missing keys: bias" in msg and "unexpected keys: extra" in msg
    before = model.weight.data.copy()
    with pytest.raises(ModuleError):
        model.load_state_dict({"weight": np.zeros((2, 3))})  # strict: bias missing; nothing changes
    np.testing.assert_array_equal(model.weight.data, before)
    missing, unexpected = model.load_state_dict({"weight": np.zeros((2, 3))}, strict=False)
    assert missing == ["bias"] and not model.weight.data.any()


def test_truncated_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    from nptransformer.serialization import CheckpointError

    model = nn.Linear(3, 2)
    good = tmp_path / "m.safetensors"
    model.save(good)
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(good.read_bytes()[:-5])
    with pytest.raises(CheckpointError, match="t.safetensors"):
        model.load(truncated)
    foreign = tmp_path / "f.npz"
    foreign.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="f.npz"):
        model.load(foreign)


def test_bad_inputs_name_the_module_and_shapes():
    with pytest.raises(ModuleError, match="not divisible"):
        nn.MultiheadAttention(10, 3)
    with pytest.raises(ModuleError, match="not divisible"):
        nn.Transformer(d_model=10, nhead=4)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0)
    with pytest.raises(ModuleError, match=r"MultiheadAttention: expected query of shape \(B, T, 8\), got shape \(2, 5, 6\)"):
        layer(nt.Tensor(np.zeros((2, 5, 6), dtype=np.float32)))
    with pytest.raises(ModuleError, match=r"expected query of shape \(B, T, 8\), got shape \(5, 8\)"):
        layer(nt.Tensor(np.zeros((5, 8), dtype=np.float32)))
    with pytest.raises(ModuleError, match=r"key_padding_mask must have shape \(2, 5\), got \(2, 4\)"):
        layer(nt.Tensor(np.zeros((2, 5, 8), dtype=np.float32)), src_key_padding_mask=np.zeros((2, 4), dtype=bool))
    with pytest.raises(ModuleError, match=r"attn_mask must have shape \(5, 5\)"):
        layer(nt.Tensor(np.zeros((2, 5, 8), dtype=np.float32)), src_mask=np.zeros((4, 4), dtype=bool))
    with pytest.raises(nt.ShapeError, match=r"linear: x's last axis must have weight.shape\[1\] = 3 features, got x of shape \(4, 5\)"):
        nn.Linear(3, 2)(nt.Tensor(np.zeros((4, 5), dtype=np.float32)))
    gpt = nn.GPT(vocab_size=5, d_model=8, n_layers=1, n_heads=2, max_len=4)
    with pytest.raises(ModuleError, match="exceeds max_len 4"):
        gpt(np.zeros((1, 6), dtype=np.int64))
    with pytest.raises(ModuleError, match=r"GPT: expected integer token ids of shape \(B, T\)"):
        gpt(np.zeros((1, 3), dtype=np.float32))


def test_attention_weights_for_plotting():
    mha = nn.MultiheadAttention(8, 2)
    x = nt.Tensor(np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32))
    pad = np.array([[False, False, True, True]])
    out, w = mha(x, x, x, key_padding_mask=pad, average_attn_weights=False)
    assert out.shape == (1, 4, 8) and w.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(w.data.sum(-1), 1.0, rtol=1e-5)
    assert not w.data[..., 2:].any()
    _, avg = mha(x, x, x)
    assert avg.shape == (1, 4, 4)


def test_attention_splits_heads_without_op_calls_under_no_grad():
    from nptransformer.profiler import profile

    mha = nn.MultiheadAttention(8, 2)
    x = nt.Tensor(np.random.default_rng(0).standard_normal((2, 4, 8)).astype(np.float32))
    recorded, _ = mha(x, x, x, is_causal=True, need_weights=False)  # with a graph: reshape and transpose ops
    with nt.no_grad(), profile(print_table=False) as prof:
        out, _ = mha(x, x, x, is_causal=True, need_weights=False)
    assert set(prof.stats) == {"linear", "scaled_dot_product_attention"}  # heads split and merged as arrays
    np.testing.assert_array_equal(out.data, recorded.data)
    assert recorded.requires_grad and not out.requires_grad


def test_attention_dropout_is_reproducible_from_the_seed():
    def run():
        nn.manual_seed(3)
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.3)
        x = nt.Tensor(np.ones((2, 5, 8), dtype=np.float32))
        return layer(x).data, layer

    (a, layer), (b, _) = run(), run()
    np.testing.assert_array_equal(a, b)
    copies = nn.TransformerEncoder(layer, 2).layers
    assert copies[0].self_attn.rng is not copies[1].self_attn.rng


def test_eval_mode_turns_dropout_off_inside_and_restores_every_flag_after():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Dropout(0.5))
    model[2].eval()  # partly in eval mode already
    x = np.ones((3, 4), dtype=np.float32)
    with nn.eval_mode(model) as inside:
        assert inside is model and not any(m.training for m in model.modules())
        np.testing.assert_array_equal(model(x).data, model[0](x).data)
    assert [m.training for m in model.modules()] == [True, True, True, False]
    with pytest.raises(RuntimeError), nn.eval_mode(model):
        raise RuntimeError("an error inside")
    assert [m.training for m in model.modules()] == [True, True, True, False]
