"""GradCache: chunked encoding with cached embedding gradients gives the plain step's gradients.

With dropout 0 the two paths compute the same function, so one optimiser step must give the same
gradients and weights. With dropout > 0 the replay must reproduce each chunk's first-pass dropout
masks (RNG state restored), which is checked on the embeddings themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest_trainer import assert_states_close, grads, make_config, model_state, synthetic_splits

from gcl.training.batching import hard_negative_rows
from gcl.training.trainer import Trainer

GC_VARIANTS = {
    "plain": {},
    "grad_accum": {"batch.grad_accum": 2},
    "query_grouped+hard_negatives+lower": {
        "batch.sampler": "query_grouped",
        "loss.hard_negatives": 2,
        "loss.same_query": "lower",
        "loss.learnable_temperature": True,
    },
}


def _trainer(tmp_path, name, dropout, **items):
    cfg = make_config(tmp_path / name, dropout=dropout, **{k.replace(".", "__"): v for k, v in items.items()})
    return Trainer(cfg, splits=synthetic_splits())


@pytest.mark.parametrize("variant", list(GC_VARIANTS))
def test_grad_cache_equals_plain_step(tmp_path, variant):
    items = {"batch.batch_size": 16, "optim.clip_grad_norm": 0.0, **GC_VARIANTS[variant]}
    plain = _trainer(tmp_path, "plain", 0.0, **items)
    cached = _trainer(tmp_path, "gc", 0.0, **items, **{"batch.grad_cache_chunk": 4})
    assert len(cached.encoding.q_tokens.chunks(cached.pairs.query_code[:16], 4)) == 4  # really chunked
    assert_states_close(model_state(plain), model_state(cached))  # same start
    if plain.cfg.loss.hard_negatives:  # the hard-negative path is exercised
        state, hn_state = plain.sampler.state_dict(), dict(plain.hn_rng.bit_generator.state)
        batch = plain.sampler.next_batch()
        assert len(hard_negative_rows(plain.pairs, batch, 2, np.random.default_rng(0))) > 0
        plain.sampler.load_state_dict(state)
        plain.hn_rng.bit_generator.state = hn_state
    loss_plain, loss_cached = plain.train_step(), cached.train_step()
    assert loss_plain == pytest.approx(loss_cached, abs=1e-6)
    g_plain, g_cached = grads(plain), grads(cached)
    assert len(g_plain) > 30
    assert_states_close(g_plain, g_cached, atol=1e-6, rtol=1e-5)
    assert_states_close(model_state(plain), model_state(cached), atol=1e-6)
    assert any(v.abs().sum() > 0 for v in g_plain.values())


def test_grad_cache_with_dropout_replays_the_first_pass(tmp_path):
    """Each chunk's graph pass sees the dropout masks of its no-grad pass (restored RNG state)."""
    t = _trainer(tmp_path, "gc", 0.1, **{"batch.batch_size": 16, "batch.grad_cache_chunk": 4})
    seen: list[torch.Tensor] = []
    real_encode = t.encode_tokens

    def recording_encode(cache, codes):
        out = real_encode(cache, codes)
        seen.append(out.detach().clone())
        return out

    t.encode_tokens = recording_encode
    t.train_step()
    assert len(seen) == 16  # 4 query chunks + 4 doc chunks, each encoded twice
    first, replay = seen[:4] + seen[4:8], seen[8:12] + seen[12:16]
    for a, b in zip(first, replay):
        assert torch.equal(a, b)
    # and the masks really are random: a third encoding of chunk 0 differs
    t.model.train()
    with torch.no_grad():
        again = real_encode(t.encoding.q_tokens, t.pairs.query_code[:4])
    assert not torch.equal(again, real_encode(t.encoding.q_tokens, t.pairs.query_code[:4]))


def _run(tmp_path, name, dropout, steps, **items):
    """Build a trainer (which seeds the global RNGs) and run ``steps`` steps; per-step gradients."""
    t = _trainer(tmp_path, name, dropout, **items)
    per_step = []
    for _ in range(steps):
        t.train_step()
        per_step.append(grads(t))
    return t, per_step


def test_grad_cache_with_dropout_is_deterministic(tmp_path):
    items = {"batch.batch_size": 16, "batch.grad_cache_chunk": 4, "optim.steps": 3}
    a, _ = _run(tmp_path, "a", 0.1, 3, **items)
    b, _ = _run(tmp_path, "b", 0.1, 3, **items)
    assert_states_close(model_state(a), model_state(b))


def test_single_chunk_grad_cache_equals_plain_step_even_with_dropout(tmp_path):
    """With one chunk the RNG is consumed in the same order as the plain path, so dropout masks
    match: the two runs agree with dropout on (plain path unbucketed, so it is one forward too)."""
    items = {"batch.batch_size": 8, "optim.clip_grad_norm": 0.0, "optim.steps": 2, "batch.length_buckets": 1}
    plain, g_plain = _run(tmp_path, "plain", 0.1, 2, **items)
    cached, g_cached = _run(tmp_path, "gc", 0.1, 2, **items, **{"batch.grad_cache_chunk": 64})
    for a, b in zip(g_plain, g_cached):
        assert_states_close(a, b, atol=1e-6, rtol=1e-5)
    assert_states_close(model_state(plain), model_state(cached), atol=1e-6)


def test_length_buckets_equal_one_padded_batch(tmp_path):
    """Encoding in length-sorted chunks changes padding only: same loss, gradients and rows order."""
    items = {"batch.batch_size": 16, "optim.clip_grad_norm": 0.0}
    one = _trainer(tmp_path, "one", 0.0, **items, **{"batch.length_buckets": 1})
    four = _trainer(tmp_path, "four", 0.0, **items, **{"batch.length_buckets": 4})
    codes = four.pairs.doc_code[:16]
    four.model.eval()
    emb_b = four.encode_bucketed(four.encoding.d_tokens, codes)
    emb_1 = four.encode_tokens(four.encoding.d_tokens, codes)
    assert torch.allclose(emb_b, emb_1, atol=1e-6)
    lengths = four.encoding.d_tokens.lengths[codes]
    assert len(set(lengths.tolist())) > 1  # buckets really differ in width
    assert one.train_step() == pytest.approx(four.train_step(), abs=1e-6)
    assert_states_close(grads(one), grads(four), atol=1e-6, rtol=1e-5)
