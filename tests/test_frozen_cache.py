"""Frozen lower layers with cached outputs: the same loss and gradients as the uncached forward.

``model.freeze_layers: L`` freezes the embeddings and the lower ``L`` layers (eval mode, no
gradient); ``model.cache_frozen`` runs them once per distinct text and trains the top layers on
the cached states (gcl/training/frozen_cache.py). The claim is exactness: for the same batch the
cached path computes the same function of the trained parameters as the whole tower with a
frozen bottom, so loss and gradients agree (float64: to 1e-10) -- dropout in the top layers
included, since both paths draw the same masks from the same RNG state.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest_trainer import assert_states_close, grads, make_config, model_state, synthetic_splits

from gcl.errors import ConfigError
from gcl.training.batching import TokenCache
from gcl.training.frozen_cache import FrozenBottom, HiddenCache
from gcl.training.trainer import Trainer

TEXTS = ["cordless drill", "a much longer product title with many words in it", "x",
         "outdoor led flood light 2 pack", "cordless drill"]


def _model(dropout: float = 0.0, dtype=torch.float64):
    from conftest_trainer import tiny_model

    from gcl.encoders.config import BiEncoderConfig
    from gcl.encoders.model import BiEncoder

    model = BiEncoder(BiEncoderConfig(text_model=str(tiny_model(dropout))))
    return model.to(dtype)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_cached_top_equals_uncached_frozen_bottom_float64(dropout):
    """Embeddings, a loss and its gradients (w.r.t. every trained parameter), cached vs not."""
    model = _model(dropout)
    tokens = TokenCache(model.tower.tokenizer, TEXTS, 32)
    frozen = FrozenBottom(model, 1)
    cache = HiddenCache.build(frozen, tokens, dtype=torch.float64, batch_texts=2)  # other padding than the step's
    assert cache.flat.shape == (int(tokens.lengths.sum()), 32)  # only the real tokens are stored
    codes = np.array([1, 0, 3, 2, 4])
    target = torch.randn(len(codes), 32, dtype=torch.float64)

    def loss_and_grads(embed):
        model.train()
        frozen.eval_frozen()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        emb = embed()
        loss = ((emb * target).sum(-1) ** 2).sum()
        loss.backward()
        named = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return emb.detach(), loss.detach(), named

    e_ref, l_ref, g_ref = loss_and_grads(lambda: tokens.embed(model, codes))
    e_new, l_new, g_new = loss_and_grads(lambda: cache.embed(model, codes))
    assert torch.allclose(e_ref, e_new, atol=1e-12, rtol=0)
    assert abs(float(l_ref - l_new)) < 1e-10
    assert g_ref.keys() == g_new.keys() and len(g_ref) > 10
    assert not any("embeddings" in n or "layer.0." in n for n in g_ref)  # the bottom is frozen
    assert_states_close(g_ref, g_new, atol=1e-10)
    if dropout:  # dropout really acted in the top layer: a different seed changes the embeddings
        torch.manual_seed(8)
        assert not torch.allclose(cache.embed(model, codes), e_new)


def test_uncached_frozen_bottom_has_no_dropout_and_no_gradient():
    model = _model(0.5, torch.float32)
    frozen = FrozenBottom(model, 1)
    model.train()
    frozen.eval_frozen()
    tokens = TokenCache(model.tower.tokenizer, TEXTS, 32)
    features = tokens.collate(np.arange(len(TEXTS)))
    a, b = frozen.hidden(features), frozen.hidden(features)
    assert torch.equal(a, b)  # eval mode: deterministic
    frozen_params = [p for p in frozen.bottom.parameters()]
    assert frozen_params and not any(p.requires_grad for p in frozen_params)


def _trainer(tmp_path, name, **items):
    cfg = make_config(tmp_path / name, dropout=0.1, **{k.replace(".", "__"): v for k, v in items.items()})
    return Trainer(cfg, splits=synthetic_splits())


@pytest.mark.parametrize("extra", [{}, {"batch.grad_cache_chunk": 4}, {"batch.length_buckets": 1}])
def test_trainer_cached_equals_uncached(tmp_path, extra):
    """Two optimiser steps of the trainer (dropout 0.1): same losses, gradients and weights."""
    items = {"batch.batch_size": 16, "model.freeze_layers": 1, **extra}
    plain = _trainer(tmp_path, "plain", **items, **{"model.cache_frozen": False})
    cached = _trainer(tmp_path, "cached", **items)
    assert isinstance(cached.encoding.q_tokens, HiddenCache) and isinstance(plain.encoding.q_tokens, TokenCache)
    n_all = sum(p.numel() for p in plain.model.parameters())
    n_trained = sum(p.numel() for p in plain.params)
    assert 0 < n_trained < n_all / 10  # the tiny model's embedding table is most of it
    before = model_state(plain)
    for _ in range(2):
        rng = torch.get_rng_state()  # both trainers draw dropout from the global generator
        loss_plain = plain.train_step()
        torch.set_rng_state(rng)
        assert loss_plain == pytest.approx(cached.train_step(), abs=1e-6)
        assert_states_close(grads(plain), grads(cached), atol=1e-6, rtol=1e-5)
    after = model_state(cached)
    assert_states_close(model_state(plain), after, atol=1e-6)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("layer.1." in k for k in changed)  # only the top layer trained


@pytest.mark.parametrize("layers", [2, 5])
def test_freeze_layers_out_of_range_is_a_config_error(tmp_path, layers):
    with pytest.raises(ConfigError, match=r"model.freeze_layers must be between 1 and 1"):
        _trainer(tmp_path, "bad", **{"model.freeze_layers": layers})


def test_negative_freeze_layers_is_refused_when_the_config_loads(tmp_path):
    with pytest.raises(ConfigError, match=r"model.freeze_layers must be >= 0"):
        make_config(tmp_path, model__freeze_layers=-1)
