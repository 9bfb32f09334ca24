"""The KV cache and model-level generation: cached decoding against recomputing every prefix,
generate against the plain-scorer searches, batched against one source at a time."""
from __future__ import annotations

import numpy as np
import pytest

import nptransformer as nt
from nptransformer import nn
from nptransformer.decoding import beam_search, greedy_search, sample
from nptransformer.decoding.generate import GPTScorer, Seq2SeqScorer
from nptransformer.nn import ModuleError
from nptransformer.nn.attention import DecoderCache, KVCache

V, BOS, EOS, PAD = 20, 1, 2, 0


def convert(model, fn):
    """Apply ``fn`` to every parameter and buffer array of ``model`` (dtype or array module)."""
    for p in model.parameters():
        p.data = fn(p.data)
    for module in model.modules():
        for name, b in list(module._buffers.items()):
            module.register_buffer(name, fn(b), persistent=name not in module._non_persistent)
    return model


def sharpen(model, factor):
    """Scale every weight matrix: an untrained model's near-uniform, repetitive predictions become
    peaked and context-dependent, so greedy and beam search take different, varied paths."""
    for p in model.parameters():
        if p.ndim == 2:
            p.data *= factor
    return model


def gpt(seed=0, max_len=24, dtype=np.float32, sharpness=10.0):
    model = sharpen(nn.GPT(V, 32, 2, 4, max_len=max_len, rng=np.random.default_rng(seed)), sharpness)
    return convert(model, lambda a: a.astype(dtype) if a.dtype.kind == "f" else a).eval()


def seq2seq(seed=0, norm_first=False, dtype=np.float32, sharpness=1.0):
    model = sharpen(nn.Seq2SeqTransformer(V, V, d_model=32, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                                          dim_feedforward=64, max_len=24, pad_id=PAD, norm_first=norm_first,
                                          rng=np.random.default_rng(seed)), sharpness)
    return convert(model, lambda a: a.astype(dtype) if a.dtype.kind == "f" else a).eval()


def sources(seed=0):
    """Three sources of lengths 9, 6 and 4, padded with PAD to (3, 9)."""
    rng = np.random.default_rng(seed)
    src = rng.integers(3, V, size=(3, 9))
    src[1, 6:] = PAD
    src[2, 4:] = PAD
    return src


TOL = {np.float32: dict(rtol=1e-6, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}


# --------------------------------------------------------------------------- cached == recomputed
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpt_cached_logits_equal_recomputed_logits(dtype):
    model = gpt(dtype=dtype, sharpness=1.0)  # as initialized: float32 rounding at its natural scale
    ids = np.random.default_rng(1).integers(0, V, size=(3, 20))
    with nt.no_grad():
        full = model(ids).data
        cache = model.new_cache()
        chunks = [(0, 5), (5, 8)] + [(t, t + 1) for t in range(8, 20)]  # a prompt, 3 tokens, then 1 at a time
        pieces = [model(ids[:, a:b], cache=cache).data for a, b in chunks]
    assert len(cache) == 20 and cache.self_attn[1].keys.shape == (3, 4, 20, 8)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, **TOL[dtype])


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_seq2seq_cached_logits_equal_recomputed_logits(dtype, norm_first):
    model = seq2seq(norm_first=norm_first, dtype=dtype)
    src = sources()
    tgt = np.random.default_rng(2).integers(3, V, size=(3, 12))
    tgt[:, 0] = BOS
    tgt[1, 4] = PAD  # a padding key inside the prefix: the cache must remember to mask it
    with nt.no_grad():
        full = model(src, tgt).data
        padding = model.padding_mask(src)
        memory = model.encode(src, padding)
        cache = model.new_cache()
        pieces = [model.decode(tgt[:, :3], memory, memory_key_padding_mask=padding, cache=cache).data]
        pieces += [model.decode(tgt[:, t:t + 1], None, cache=cache).data for t in range(3, 12)]
    assert cache.self_attn[0].padding[1].tolist() == [t == 4 for t in range(12)]
    assert cache.cross_attn[0].keys.shape == (3, 4, 9, 8)  # the memory's keys, projected once
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, **TOL[dtype])


def test_cached_attention_with_chunks_masks_and_reordering():
    """MultiheadAttention alone: chunks of queries see the cached keys and the causal part of their
    own chunk (bottom-right aligned), padding is remembered, and select() gathers rows."""
    rng = np.random.default_rng(3)
    mha = nn.MultiheadAttention(8, 2)
    x = rng.standard_normal((3, 7, 8)).astype(np.float64)
    pad = np.zeros((3, 7), dtype=bool)
    pad[0, 2] = pad[2, 5] = True
    for p in mha.parameters():
        p.data = p.data.astype(np.float64)
    with nt.no_grad():
        full = mha(nt.Tensor(x), key_padding_mask=pad, is_causal=True)[0].data
        cache = KVCache()
        first = mha(nt.Tensor(x[:, :3]), key_padding_mask=pad[:, :3], is_causal=True, cache=cache)[0].data
        rows = [2, 0, 0]
        cache = cache.select(rows)
        rest = mha(nt.Tensor(x[rows, 3:]), key_padding_mask=pad[rows, 3:], is_causal=True, cache=cache)[0].data
    np.testing.assert_allclose(first, full[:, :3], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rest, full[rows, 3:], rtol=1e-12, atol=1e-12)
    assert cache.padding.tolist() == pad[rows].tolist() and len(cache) == 7


def test_kv_cache_appends_in_place_and_grows_by_doubling():
    """Appended keys land in buffers with room to spare (doubled when full): keys and values stay
    the concatenation of every update, arrays returned earlier keep their values, select copies."""
    rng = np.random.default_rng(4)
    cache, chunks, capacities, returned = KVCache(), [], [], []
    for t in (3, 1, 1, 1, 2, 1, 5, 1):
        k = rng.standard_normal((2, 4, t, 8))
        chunks.append(k)
        keys, values, padding = cache.update(k, -k)
        returned.append((keys, keys.copy()))
        capacities.append(cache._keys.shape[2])
    expected = np.concatenate(chunks, axis=2)
    np.testing.assert_array_equal(cache.keys, expected)
    np.testing.assert_array_equal(cache.values, -expected)
    assert len(cache) == 15 and padding is None
    assert capacities == [3, 6, 6, 6, 12, 12, 24, 24]  # the first chunk as given, then doubling
    for view, snapshot in returned:
        np.testing.assert_array_equal(view, snapshot)  # later writes go past what an earlier call returned
    picked = cache.select([1, 1])
    np.testing.assert_array_equal(picked.keys, expected[[1, 1]])
    picked.update(np.zeros((2, 4, 1, 8)), np.zeros((2, 4, 1, 8)))
    np.testing.assert_array_equal(cache.keys, expected)  # the original cache is untouched
    assert len(picked) == 16 and len(cache) == 15


def call_sequence():
    """Scorer calls as a beam search makes them: each prefix extends one of the previous call,
    reordered, repeated and dropped; then a call that extends nothing (a new search)."""
    b = BOS
    return [
        [[b]],
        [[b, 7], [b, 3], [b, 12]],
        [[b, 3, 5], [b, 7, 9], [b, 3, 11], [b, 3, 6]],
        [[b, 3, 11, 4], [b, 3, 5, 8], [b, 3, 5, 9]],
        [[b, 9, 9], [b, 4, 4]],
    ]


def test_gpt_cached_scorer_follows_beam_reordering():
    model, prompt = gpt(), [4, 5, 6]
    cached, recomputed = GPTScorer(model, prompt), GPTScorer(model, prompt, use_cache=False)
    for prefixes in call_sequence():
        np.testing.assert_allclose(cached(prefixes), recomputed(prefixes), rtol=1e-6, atol=1e-6)
    with nt.no_grad():  # and the uncached scorer is the model's last-position log-softmax
        logits = model(np.array([prompt + [3, 11, 4]])).data[0, -1].astype(np.float64)
    expected = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    np.testing.assert_allclose(recomputed([[BOS, 3, 11, 4]])[0], expected, atol=1e-5)


def test_seq2seq_cached_scorer_follows_beam_reordering_across_sources():
    """As beam_search_batch calls it: rows grouped by source, a source finishing (0), a source
    whose beam reorders and repeats its parents (1); then a restart."""
    b = BOS
    calls = [
        ([[b], [b], [b]], [0, 1, 2]),
        ([[b, 7], [b, 3], [b, 12], [b, 4]], [0, 1, 1, 2]),
        ([[b, 3, 5], [b, 3, 11], [b, 12, 6], [b, 4, 4], [b, 4, 8]], [1, 1, 1, 2, 2]),
        ([[b, 12, 6, 9], [b, 3, 5, 1], [b, 3, 5, 2], [b, 4, 8, 2]], [1, 1, 1, 2]),
        ([[b, 9], [b, 9]], [2, 0]),
    ]
    model, src = seq2seq(), sources()
    cached, recomputed = Seq2SeqScorer(model, src), Seq2SeqScorer(model, src, use_cache=False)
    shapes = []
    decode = model.decode
    model.decode = lambda ids, *args, **kw: shapes.append(ids.shape) or decode(ids, *args, **kw)
    for prefixes, srcs in calls:
        got = cached(prefixes, srcs)
        np.testing.assert_allclose(got, recomputed(prefixes, srcs), rtol=1e-6, atol=1e-6)
    assert shapes[::2] == [(3, 1), (4, 1), (5, 1), (4, 1), (2, 2)]  # cached: one new token, then a restart


def test_cached_scorer_runs_the_model_on_the_new_token_only():
    model = gpt()
    shapes = []
    forward = model.forward
    model.forward = lambda ids, **kw: shapes.append(ids.shape) or forward(ids, **kw)
    scorer = GPTScorer(model, [4, 5, 6])
    for prefixes in call_sequence()[:4]:
        scorer(prefixes)
    assert shapes == [(1, 3), (3, 1), (4, 1), (3, 1)]


# --------------------------------------------------------------------------- generate
def test_gpt_greedy_generate_equals_greedy_search_on_an_uncached_scorer():
    model, prompt = gpt(seed=3), [7, 8]
    expected = greedy_search(GPTScorer(model, prompt, use_cache=False), BOS, EOS, 12)
    assert model.generate(prompt, 12, eos_id=EOS) == expected
    assert model.generate(prompt, 12, eos_id=EOS, use_cache=False) == expected
    assert len(set(expected)) > 3  # a varied sequence, not one token repeated


def test_gpt_generate_without_eos_runs_to_max_new_tokens():
    model = gpt(max_len=10)
    tokens = model.generate([3], 10)  # 1 + 10 - 1 positions: exactly the model's max_len
    ids = [3]
    with nt.no_grad():  # greedy by hand: the argmax of the last position, appended, 10 times
        for _ in range(10):
            ids.append(int(np.argmax(model(np.array([ids[:10]])).data[0, -1])))
    assert tokens == ids[1:]


@pytest.mark.parametrize("options", [
    dict(beam_size=3),
    dict(beam_size=4, length_penalty=1.0, repetition_penalty=1.5, no_repeat_ngram_size=2),
    dict(beam_size=1, length_penalty=0.6),
])
def test_gpt_beam_generate_is_the_same_with_and_without_the_cache(options):
    model, prompt = gpt(seed=1), [7, 8]
    cached = model.generate(prompt, 12, eos_id=EOS, **options)
    assert cached == model.generate(prompt, 12, eos_id=EOS, use_cache=False, **options)
    scorer = GPTScorer(model, prompt, use_cache=False)
    expected = beam_search(scorer, BOS, EOS, options["beam_size"], 12, options.get("length_penalty", 0.0), "hf",
                           options.get("repetition_penalty", 1.0), options.get("no_repeat_ngram_size", 0))
    assert cached == expected[0][0]


def test_gpt_sampling_with_a_seed_is_reproducible():
    model, prompt = gpt(), [4]
    options = dict(do_sample=True, temperature=1.5, top_k=8, top_p=0.9)
    first = model.generate(prompt, 15, seed=7, **options)
    assert model.generate(prompt, 15, seed=7, **options) == first
    assert model.generate(prompt, 15, seed=7, use_cache=False, **options) == first
    with_eos = model.generate(prompt, 15, eos_id=EOS, seed=7, **options)
    assert with_eos == sample(GPTScorer(model, prompt, use_cache=False), BOS, EOS, 15, 1.5, 8, 0.9, seed=7)
    assert any(model.generate(prompt, 15, seed=s, **options) != first for s in range(8, 11))


@pytest.mark.parametrize("options", [dict(), dict(beam_size=3, length_penalty=0.8, length_penalty_style="gnmt"),
                                     dict(beam_size=2, repetition_penalty=1.3, no_repeat_ngram_size=2)])
def test_seq2seq_generate_cached_batched_equals_uncached_one_source_at_a_time(options):
    model, src = seq2seq(seed=3, sharpness=3.0), sources()
    batched = model.generate(src, BOS, EOS, 10, **options)
    lengths = (src != PAD).sum(axis=1)
    for i, tokens in enumerate(batched):  # each source alone, trimmed of its padding, no cache
        alone = model.generate(src[i:i + 1, :lengths[i]], BOS, EOS, 10, use_cache=False, **options)
        assert alone == [tokens]
    assert len({tuple(t) for t in batched}) == 3


def test_seq2seq_greedy_generate_equals_greedy_search():
    model, src = seq2seq(seed=1), sources(1)
    batched = model.generate(src, BOS, EOS, 10)
    for i, tokens in enumerate(batched):
        assert tokens == greedy_search(Seq2SeqScorer(model, src[i:i + 1], use_cache=False), BOS, EOS, 10)


def test_generate_restores_training_mode_and_records_no_graph():
    model = nn.GPT(V, 16, 1, 2, max_len=8, dropout=0.5, rng=np.random.default_rng(0))
    model.blocks[0].eval()  # a mixed state, restored as it was
    tokens = model.generate([3], 6)
    assert tokens == model.generate([3], 6)  # dropout was off
    assert model.training and not model.blocks[0].training and model.drop.training
    assert nt.is_grad_enabled()


def test_generate_on_every_backend(xp):
    """Cache arrays, masks and ids are built with the model's array module (strict: no numpy leaks)."""
    reference = gpt().generate([4, 5], 8, beam_size=2, eos_id=EOS)
    model = gpt()
    convert(model, xp.asarray)
    assert model.generate([4, 5], 8, beam_size=2, eos_id=EOS) == reference
    s2s = seq2seq()
    expected = s2s.generate(sources(), BOS, EOS, 6, beam_size=2)
    convert(s2s, xp.asarray)
    assert s2s.generate(xp.asarray(sources()), BOS, EOS, 6, beam_size=2) == expected


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("args, kwargs, message", [
    (([3] * 25, 1), {}, r"a prompt of 25 tokens and max_new_tokens=1 need 25 positions, but the model has max_len=24"),
    (([3] * 5, 21), {}, r"need 25 positions, but the model has max_len=24"),
    (([], 3), {}, r"prompt_ids must be a non-empty integer array of shape \(T,\), got shape \(0,\)"),
    (([[3, 4]], 3), {}, r"shape \(T,\), got shape \(1, 2\)"),
    (([0.5], 3), {}, r"got shape \(1,\) and dtype float64"),
    (([3, V], 3), {}, r"prompt_ids must lie in \[0, 20\) \(the vocabulary\), got values from 3 to 20"),
    (([3], 0), {}, r"max_new_tokens must be an int >= 1, got 0"),
    (([3], 4), dict(eos_id=V), r"eos_id must be an int in \[0, 20\), got 20"),
    (([3], 4), dict(temperature=0.7), r"temperature cannot be used with do_sample=False; they need do_sample=True"),
    (([3], 4), dict(seed=1, top_k=3), r"top_k, seed cannot be used with do_sample=False"),
    (([3], 4), dict(do_sample=True, beam_size=2), r"beam_size cannot be used with do_sample=True"),
])
def test_gpt_generate_rejects_bad_input(args, kwargs, message):
    with pytest.raises(ValueError, match=r"^GPT\.generate: .*" + message):
        gpt().generate(*args, **kwargs)


def test_gpt_generate_passes_the_searches_own_errors_through():
    with pytest.raises(ValueError, match=r"^sample: temperature must be a finite number > 0"):
        gpt().generate([3], 4, do_sample=True, temperature=0)
    with pytest.raises(ValueError, match=r"^beam_search: repetition_penalty must be a finite number > 0"):
        gpt().generate([3], 4, repetition_penalty=-1.0)


@pytest.mark.parametrize("args, message", [
    ((np.array([3, 4]), BOS, EOS, 5), r"src_ids must be a non-empty integer array of shape \(B, S\), got shape \(2,\)"),
    ((np.full((1, 30), 3), BOS, EOS, 5), r"sources of length 30 exceed the model's max_len=24"),
    ((np.full((1, 3), 3), BOS, EOS, 25), r"max_len=25 tokens need 25 decoder positions .* max_len=24"),
    ((np.full((1, 3), 3), V, EOS, 5), r"bos_id must be an int in \[0, 20\), got 20"),
    ((np.full((1, 3), 3), BOS, -1, 5), r"eos_id must be an int in \[0, 20\), got -1"),
    ((np.full((1, 3), 3), BOS, EOS, 0), r"max_len must be an int >= 1, got 0"),
])
def test_seq2seq_generate_rejects_bad_input(args, message):
    with pytest.raises(ValueError, match=r"^Seq2SeqTransformer\.generate: .*" + message):
        seq2seq().generate(*args)


def test_the_cache_refuses_misuse():
    model = gpt()
    with pytest.raises(ModuleError, match=r"a KV cache holds plain arrays .* inside nptransformer.no_grad\(\)"):
        model(np.array([[3]]), cache=model.new_cache())
    with nt.no_grad():
        with pytest.raises(ModuleError, match=r"GPT: expected DecoderCache\(2\) from new_cache\(\)"):
            model(np.array([[3]]), cache=DecoderCache(3))
        cache = model.new_cache()
        model(np.full((1, 20), 3), cache=cache)
        with pytest.raises(ModuleError, match=r"LearnedPositionalEmbedding: positions up to 25 exceed max_len 24"):
            model(np.full((1, 5), 3), cache=cache)
        with pytest.raises(ModuleError, match=r"KVCache: new keys of shape \(2, 4, 1, 8\) do not extend cached "
                                              r"keys of shape \(1, 4, 20, 8\)"):
            model(np.full((2, 1), 3), cache=cache)
        s2s = seq2seq()
        with pytest.raises(ModuleError, match="memory is None but the cache holds no cross-attention keys yet"):
            s2s.decode(np.array([[BOS]]), None, cache=s2s.new_cache())
        with pytest.raises(ModuleError, match=r"PositionalEncoding: positions up to 26 exceed max_len 24"):
            s2s.positional(nt.Tensor(np.zeros((1, 2, 32), dtype=np.float32)), offset=24)
    with pytest.raises(ValueError, match="GPTScorer: expected one or more non-empty prefixes of one length"):
        GPTScorer(model, [3])([[BOS], [BOS, 4]])
