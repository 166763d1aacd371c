"""Frozen lower layers' outputs paid once: on disk across runs, reused by dev evaluation and by
the saved model (gcl/hidden_store.py, gcl/training/frozen_reuse.py).

The claims: (1) a second training run with the same data and frozen part (another seed, another
loss) runs the frozen layers on no text, and trains on bit-identical cached states; (2) encoding
through the stored lower-layer outputs equals the model's full forward (float64 to 1e-12; float32
as ``tower.encode`` computes it to 1e-6, with other padding); (3) the saved model records the
frozen part and evaluation uses the record only when the loaded lower layers are bit-identical;
(4) a corrupt cache file is ignored with a warning and rebuilt.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest_trainer import make_config, synthetic_splits, tiny_model

from gcl.hidden_store import HiddenStore, token_key
from gcl.training.frozen_cache import FrozenBottom, HiddenCache
from gcl.training.frozen_reuse import FROZEN_FILE, CachedBottomEncoder
from gcl.training.trainer import Trainer

TEXTS = ["cordless drill", "a much longer product title with many words in it and then some more", "x",
         "outdoor led flood light 2 pack", "cordless drill", "", "  padded  text  "]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("GCL_CACHE_DIR", str(d))
    return d


@pytest.fixture(autouse=True)
def small_batches_use_the_cache(monkeypatch):
    """The tiny data's batches are below MIN_TEXTS (the size under which the full forward runs)."""
    import gcl.training.frozen_reuse as R

    monkeypatch.setattr(R, "MIN_TEXTS", 1)


@pytest.fixture
def frozen_calls(monkeypatch):
    """Texts run through the frozen layers (FrozenBottom.hidden), counted."""
    calls = {"texts": 0}
    inner = FrozenBottom.hidden

    def counted(self, features):
        calls["texts"] += int(features["input_ids"].shape[0])
        return inner(self, features)

    monkeypatch.setattr(FrozenBottom, "hidden", counted)
    return calls


def _model(dtype=torch.float32):
    from gcl.encoders.config import BiEncoderConfig
    from gcl.encoders.model import BiEncoder

    return BiEncoder(BiEncoderConfig(text_model=str(tiny_model(0.0)))).to(dtype).eval()


def _full_forward(model, texts):
    with torch.inference_mode():
        return model.embed_texts(texts).cpu()


@pytest.mark.parametrize("batch_size", [2, 256])
def test_encoding_through_stored_bottom_equals_full_forward_float64(tmp_path, frozen_calls, batch_size):
    model = _model(torch.float64)
    enc = CachedBottomEncoder(model, 1, cache_dir=tmp_path)
    first = enc.embed(TEXTS, batch_size=batch_size)  # computes B and stores it (6 distinct texts)
    assert frozen_calls["texts"] == len(set(TEXTS))
    again = CachedBottomEncoder(model, 1, cache_dir=tmp_path).embed(TEXTS[::-1], batch_size=3)  # all from disk
    assert frozen_calls["texts"] == len(set(TEXTS))
    ref = _full_forward(model, TEXTS)  # one batch, padded to the longest text
    assert first.dtype == torch.float64
    assert torch.allclose(first, ref, atol=1e-12, rtol=0)
    assert torch.allclose(again.flip(0), ref, atol=1e-12, rtol=0)


def test_encode_texts_equals_tower_encode_float32(tmp_path):
    """What evaluation calls (float32 numpy) against sentence-transformers' own encode."""
    model = _model()
    reference = model.encode_texts(TEXTS, batch_size=4)  # no cached bottom: tower.encode
    model.cached_bottom = CachedBottomEncoder(model, 1, cache_dir=tmp_path)
    cached = model.encode_texts(TEXTS, batch_size=2)
    assert cached.dtype == np.float32 and cached.shape == reference.shape
    np.testing.assert_allclose(cached, reference, atol=1e-6, rtol=0)


def _trainer(tmp_path, name, **items):
    cfg = make_config(tmp_path / name, dropout=0.1,
                      **{"model__freeze_layers": 1, **{k.replace(".", "__"): v for k, v in items.items()}})
    return Trainer(cfg, splits=synthetic_splits())


def test_second_run_builds_no_hidden_cache(tmp_path, cache_dir, frozen_calls):
    first = _trainer(tmp_path, "a")
    n_texts = len(first.encoding.q_tokens.lengths) + len(first.encoding.d_tokens.lengths)
    assert frozen_calls["texts"] == n_texts > 0  # each distinct training text once
    assert any(cache_dir.glob("hidden-*/part-*.npy"))
    frozen_calls["texts"] = 0
    second = _trainer(tmp_path, "b", seed=3, **{"loss.weight_fn": "constant", "loss.temperature": 0.1})
    assert frozen_calls["texts"] == 0
    for side in ("q_tokens", "d_tokens"):
        a, b = getattr(first.encoding, side), getattr(second.encoding, side)
        assert isinstance(b, HiddenCache) and torch.equal(a.flat, b.flat)
    second.train_step()  # and it trains on them
    assert frozen_calls["texts"] == 0


def test_persist_frozen_false_writes_nothing(tmp_path, cache_dir, frozen_calls):
    _trainer(tmp_path, "a", **{"model.persist_frozen": False})
    assert frozen_calls["texts"] > 0 and not any(cache_dir.glob("hidden-*"))


def test_corrupt_cache_files_are_ignored_with_a_warning_and_rebuilt(tmp_path, cache_dir, frozen_calls):
    first = _trainer(tmp_path, "a")
    n = frozen_calls["texts"]
    for part in cache_dir.glob("hidden-*/part-*.npy"):
        part.write_bytes(part.read_bytes()[:100])  # truncated
    frozen_calls["texts"] = 0
    with pytest.warns(UserWarning, match="hidden-state cache file .* is unreadable"):
        second = _trainer(tmp_path, "b")
    assert frozen_calls["texts"] == n
    assert torch.allclose(first.encoding.d_tokens.flat, second.encoding.d_tokens.flat, atol=1e-6)
    frozen_calls["texts"] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: now read without complaint
        _trainer(tmp_path, "c")
    assert frozen_calls["texts"] == 0
    index = next(cache_dir.glob("hidden-*/index.json"))
    index.write_text("{not json")
    with pytest.warns(UserWarning, match="hidden-state cache index .* is unreadable"):
        _trainer(tmp_path, "d")
    assert frozen_calls["texts"] == n


def test_dev_evaluation_reuses_the_stored_bottom(tmp_path, cache_dir, frozen_calls):
    from gcl.training.dev_eval import DevEvaluator

    tr = _trainer(tmp_path, "a", **{"eval.every": 2})
    tr.train_step()
    frozen_calls["texts"] = 0
    first = tr.evaluate_dev()
    assert frozen_calls["texts"] > 0  # the dev corpus's texts not in training pairs
    frozen_calls["texts"] = 0
    again = tr.evaluate_dev()
    assert frozen_calls["texts"] == 0 and again == first
    enc, tr.model.cached_bottom = tr.model.cached_bottom, None  # the full forward, same weights
    full = DevEvaluator(tr.splits, tr.cfg.eval, seed=tr.cfg.seed)(tr.model)
    tr.model.cached_bottom = enc
    assert full.keys() == first.keys()
    for k in full:
        assert first[k] == pytest.approx(full[k], abs=1e-6)


def test_saved_model_records_its_frozen_bottom_and_evaluation_checks_it(tmp_path, cache_dir, frozen_calls):
    from gcl.encoders.base import load_model

    tr = _trainer(tmp_path, "a", **{"optim.steps": 2})
    tr.fit()
    final = tmp_path / "a" / "final"
    record = json.loads((final / FROZEN_FILE).read_text())
    assert record == {"freeze_layers": 1, "fingerprint": tr.model.cached_bottom.fingerprint}
    docs = synthetic_splits().corpus_1.head(50)
    model = load_model(final)
    assert model.cached_bottom is not None and model.cached_bottom.n_layers == 1
    frozen_calls["texts"] = 0
    cached = model.encode_documents(docs)
    assert frozen_calls["texts"] < len(docs)  # training titles were stored by the run
    model.cached_bottom = None
    np.testing.assert_allclose(cached, model.encode_documents(docs), atol=1e-6, rtol=0)
    # the top layers were trained: the saved model is not the starting one
    assert not np.allclose(cached, load_model(str(tiny_model(0.1))).encode_documents(docs), atol=1e-4)
    # gcl evaluate --no-cache / --cache-dir: the stored outputs follow
    from gcl.training.frozen_reuse import MemoryStore, use_cache_dir

    model = load_model(final)
    use_cache_dir(model, None)
    assert isinstance(model.cached_bottom.store(), MemoryStore)
    use_cache_dir(model, tmp_path / "elsewhere")
    model.encode_documents(docs)
    assert any((tmp_path / "elsewhere").glob("hidden-*/part-*.npy"))
    # a record that does not match the loaded weights is not used
    (final / FROZEN_FILE).write_text(json.dumps({**record, "fingerprint": "0" * 40}))
    with pytest.warns(UserWarning, match="differ from the recorded frozen ones"):
        model = load_model(final)
    assert model.cached_bottom is None


def test_small_batches_take_the_full_forward_and_touch_no_cache(tmp_path, frozen_calls, monkeypatch):
    """A service's queries: no cache read or written, the full forward's own numbers."""
    import gcl.training.frozen_reuse as R

    monkeypatch.setattr(R, "MIN_TEXTS", len(TEXTS) + 1)
    model = _model()
    reference = model.encode_texts(TEXTS)
    model.cached_bottom = CachedBottomEncoder(model, 1, cache_dir=tmp_path)
    assert np.array_equal(model.encode_texts(TEXTS), reference)
    assert frozen_calls["texts"] == 0 and not any(tmp_path.glob("hidden-*/*.npy"))


def test_store_round_trip_and_concurrent_writers(tmp_path):
    ids = [[101, 7, 102], [101, 102], [101, 9, 9, 9, 102]]
    lengths = np.array([len(x) for x in ids])
    flat = np.random.default_rng(0).standard_normal((int(lengths.sum()), 4)).astype(np.float32)
    keys = [token_key(x) for x in ids]
    a, b = HiddenStore(tmp_path, "fp"), HiddenStore(tmp_path, "fp")  # two runs on one directory
    a.put(keys[:2], flat[:5], lengths[:2])
    b.put(keys[2:], flat[5:], lengths[2:])
    found, states = HiddenStore(tmp_path, "fp").lookup(keys, lengths)
    assert found.all() and np.array_equal(np.concatenate(states), flat)
    found, _ = HiddenStore(tmp_path, "fp").lookup(keys, lengths + 1)  # another length: not the same text
    assert not found.any()
    assert token_key([1, 2]) != token_key([2, 1])
