"""gcl.sentence_transformers.freeze_lower_layers: a sentence-transformers model trained on cached
lower-layer outputs computes the same loss and gradients as with its own forward.

The reference is the library's own forward of the same model with the same frozen layers
(``cache=False``), run on the same batch from the same RNG state: the library's
MultipleNegativesRankingLoss and CoSENTLoss, float64, dropout on in the trained layers, to 1e-10.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sentence_transformers")

from conftest_trainer import tiny_model  # noqa: E402

from gcl.errors import ConfigError  # noqa: E402
from gcl.sentence_transformers import freeze_lower_layers  # noqa: E402

QUERIES = ["cordless drill", "outdoor led flood light", "x", "a much longer query about garden hoses and reels"]
DOCS = ["dewalt 20v cordless drill kit with two batteries", "led flood light 2 pack", "x",
        "cordless drill"]  # two documents equal to query texts: one cache entry each


def st_model(dropout: float = 0.1):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model(dropout)), device="cpu").double()


def features(model, texts):
    return dict(model.preprocess(texts))


def loss_and_grads(model, loss_fn, columns, labels, seed=0):
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = loss_fn([features(model, c) for c in columns], labels)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_name", ["mnrl", "cosent"])
def test_cached_forward_gives_the_library_forward_s_loss_and_gradients(loss_name):
    from sentence_transformers.sentence_transformer import losses

    ref_model, model = st_model(), st_model()
    model.load_state_dict(ref_model.state_dict())
    make = {"mnrl": lambda m: losses.MultipleNegativesRankingLoss(m),
            "cosent": lambda m: losses.CoSENTLoss(m)}[loss_name]
    labels = None if loss_name == "mnrl" else torch.tensor([1.0, 0.6, 0.0, 0.3], dtype=torch.float64)
    freeze_lower_layers(ref_model, 1, cache=False)
    _, forward = freeze_lower_layers(model, 1)
    ref = loss_and_grads(ref_model, make(ref_model), [QUERIES, DOCS], labels)
    for _ in range(2):  # the first step computes B(x), the second reads it from memory
        got = loss_and_grads(model, make(model), [QUERIES, DOCS], labels)
        assert torch.allclose(got[0], ref[0], atol=1e-10, rtol=0), (got[0], ref[0])
        assert set(got[1]) == set(ref[1]) and all(".encoder.layer.1." in n for n in got[1])  # only the top trains
        for name in ref[1]:
            assert torch.allclose(got[1][name], ref[1][name], atol=1e-10, rtol=0), name
    assert ref[1] and any(g.abs().max() > 0 for g in ref[1].values())  # dropout on, gradients not all zero
    stats = forward.stats()
    assert stats["computed"] == len(set(QUERIES) | set(DOCS)) == stats["in_memory"] == 6  # "x", "cordless drill" twice
    assert stats["calls"] == 4 and stats["fallbacks"] == 0


def test_frozen_layers_stay_in_eval_mode_and_do_not_change():
    model = st_model()
    freeze_lower_layers(model, 1)
    auto = model[0].auto_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    from sentence_transformers.sentence_transformer import losses

    loss_fn = losses.MultipleNegativesRankingLoss(model)
    model.train()
    assert not auto.embeddings.training and not auto.encoder.layer[0].training and auto.encoder.layer[1].training
    loss_fn([features(model, QUERIES), features(model, DOCS)], None).backward()
    opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) == (".encoder.layer.1." not in n), n


def test_calls_it_cannot_serve_go_to_the_encoder_s_own_forward():
    model = st_model(0.0)
    ref = st_model(0.0)
    ref.load_state_dict(model.state_dict())
    freeze_lower_layers(ref, 1, cache=False)
    _, forward = freeze_lower_layers(model, 1)
    auto, ref_auto = model[0].auto_model, ref[0].auto_model
    model.eval(), ref.eval()
    f = features(model, QUERIES)
    left = {"input_ids": f["input_ids"].flip(1), "attention_mask": f["attention_mask"].flip(1)}  # left padding
    pair = {**f, "token_type_ids": torch.ones_like(f["input_ids"])}
    with torch.no_grad():
        for feats, kw in ((left, {}), (pair, {}), (f, {"output_hidden_states": True})):
            got = auto(**feats, **kw)
            want = ref_auto(**feats, **kw)
            assert torch.equal(got.last_hidden_state, want.last_hidden_state)
        assert forward.stats()["fallbacks"] == 3 and forward.stats()["calls"] == 0
        plain = auto(**f).last_hidden_state
        want = ref_auto(**f).last_hidden_state
    real = f["attention_mask"].bool()
    assert torch.allclose(plain[real], want[real], atol=1e-10, rtol=0)  # padded positions: not compared
    assert forward.stats()["calls"] == 1
    forward.uninstall()
    with torch.no_grad():
        assert torch.equal(auto(**f).last_hidden_state, ref_auto(**f).last_hidden_state)
    with pytest.raises(ValueError, match="installed"):
        freeze_lower_layers(ref, 1)[1].install()


def test_the_store_shares_b_of_x_between_runs(tmp_path):
    from gcl.hidden_store import open_store
    from gcl.training.frozen_cache import FrozenBottom
    from gcl.sentence_transformers import _TowerView

    first = st_model(0.0)
    fingerprint = FrozenBottom(_TowerView(first), 1, freeze=False).fingerprint()
    frozen, fwd1 = freeze_lower_layers(first, 1, store=open_store(tmp_path, fingerprint))
    first.eval()
    with torch.no_grad():
        a = first.encode(QUERIES + DOCS, convert_to_tensor=True)
    assert fwd1.stats()["computed"] == 6 and fwd1.stats()["read_from_store"] == 0
    second = st_model(0.0)
    second.load_state_dict(first.state_dict())
    _, fwd2 = freeze_lower_layers(second, 1, store=open_store(tmp_path, fingerprint))
    second.eval()
    with torch.no_grad():
        b = second.encode(QUERIES + DOCS, convert_to_tensor=True)
    assert fwd2.stats()["computed"] == 0 and fwd2.stats()["read_from_store"] == 6
    assert torch.allclose(a, b, atol=1e-12, rtol=0)
    fwd2.uninstall()
    with torch.no_grad():
        c = second.encode(QUERIES + DOCS, convert_to_tensor=True)
    assert torch.allclose(c, b, atol=1e-10, rtol=0)  # the library's own forward


def test_a_bad_depth_is_a_config_error():
    with pytest.raises(ConfigError, match="freeze_layers must be between 1 and 1"):
        freeze_lower_layers(st_model(), 2)


def test_a_memory_limit_keeps_what_fits_and_serves_the_rest_unchanged():
    """Past max_memory_bytes, texts are computed again (no store) at every call, never dropped."""
    ref, model = st_model(0.0), st_model(0.0)
    model.load_state_dict(ref.state_dict())
    _, unlimited = freeze_lower_layers(ref, 1)
    one_text = 2 * 32 * 8  # "x": [CLS] x [SEP] = 3 tokens x 32 wide x 8 bytes (float64); allows 2 tokens' worth
    _, limited = freeze_lower_layers(model, 1, max_memory_bytes=3 * 32 * 8 + one_text)
    ref.eval(), model.eval()
    with torch.no_grad():
        for _ in range(2):
            a = model.encode(QUERIES + DOCS, convert_to_tensor=True, batch_size=16)
            b = ref.encode(QUERIES + DOCS, convert_to_tensor=True, batch_size=16)
            assert torch.allclose(a, b, atol=1e-12, rtol=0)
    s = limited.stats()
    assert s["memory_bytes"] <= 3 * 32 * 8 + one_text and 1 <= s["in_memory"] < 6
    assert s["computed"] == 6 + (6 - s["in_memory"])  # the second call recomputed only what did not fit
    assert unlimited.stats()["computed"] == 6 and unlimited.stats()["memory_bytes"] > s["memory_bytes"]
