"""GCLLoss(cosent_weight=μ): the cross-query CoSENT term against a naive loop, sentence-transformers'
own CoSENTLoss, a hand-computed case, edge cases, and through the trainer, GradCache, the
sentence-transformers wrapper and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest_trainer import assert_states_close, grads
from hypothesis import given, settings
from hypothesis import strategies as st
from test_listwise_training import _cli_args, _trainer, wrapper_case

from gcl.losses import GCLLoss

HYPO = dict(deadline=None, derandomize=True, database=None)


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def naive_term(q, d, w, s, scale) -> torch.Tensor:
    """docs/losses.md "Cross-query term", one ordered pair at a time (float64)."""
    b = q.shape[0]
    terms = [q.new_ones(())]  # the 1 of log(1 + ...)
    for i in range(b):
        for j in range(b):
            if w[i] > 0 and w[j] > 0 and s[i] > s[j]:
                terms.append(torch.exp(scale * ((q[j] * d[j]).sum() - (q[i] * d[i]).sum())))
    return torch.log(torch.stack(terms).sum())


batches = st.integers(2, 9).flatmap(lambda b: st.tuples(
    st.just(b),
    st.lists(st.sampled_from([1.0, 1.33, 2.0, 2.67, 3.0]), min_size=b, max_size=b),
    st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=b, max_size=b),
    st.lists(st.integers(0, 3), min_size=b, max_size=b),
    st.integers(0, 10_000),
    st.sampled_from([0.05, 0.1, 1.0]),
    st.sampled_from([0.3, 1.0, 2.0]),
))


@settings(max_examples=60, **HYPO)
@given(batches)
def test_term_matches_naive_loop(case):
    b, scores, weights, qids, seed, temp, mu = case
    if sum(weights) == 0:
        weights[0] = 1.0
    q, d = unit(b, 5, seed), unit(b, 5, seed + 1)
    w, s = torch.tensor(weights, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64)
    meta = dict(query_ids=torch.tensor(qids), doc_ids=torch.arange(b), scores=s)
    for same_query in ("mask", "lower"):
        with_term = GCLLoss(temperature=temp, same_query=same_query, cosent_weight=mu)(q, d, w, **meta)
        without = GCLLoss(temperature=temp, same_query=same_query)(q, d, w, **meta)
        torch.testing.assert_close(with_term - without, mu * naive_term(q, d, w, s, 1 / temp), rtol=1e-10, atol=1e-10)


def test_gradient_matches_naive_loop():
    q, d = unit(7, 6, 3).requires_grad_(), unit(7, 6, 4).requires_grad_()
    w = torch.tensor([1.0, 0.5, 0.0, 1.0, 0.2, 1.0, 0.7], dtype=torch.float64)
    s = torch.tensor([3.0, 2.0, 3.0, 1.33, 2.67, 2.0, 1.0], dtype=torch.float64)
    ids = dict(query_ids=torch.tensor([0, 0, 1, 1, 2, 3, 3]), doc_ids=torch.arange(7), scores=s)
    got = GCLLoss(cosent_weight=1.0)(q, d, w, **ids) - GCLLoss()(q, d, w, **ids)
    g_got = torch.autograd.grad(got, (q, d))
    g_want = torch.autograd.grad(naive_term(q, d, w, s, 20.0), (q, d))
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert torch.count_nonzero(g_got[0][2]) == 0  # a weight-0 row takes no part


def test_equals_sentence_transformers_cosent_loss():
    """All rows weighted: the term is sentence-transformers' CoSENTLoss at scale 1/T, on the same pairs."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    q, d = unit(12, 8, 5), unit(12, 8, 6)
    s = torch.tensor([3.0, 2.0, 1.0, 3.0, 2.67, 1.33, 2.0, 2.0, 3.0, 1.0, 2.33, 1.67], dtype=torch.float64)
    w = torch.ones(12, dtype=torch.float64)
    ids = dict(query_ids=torch.arange(12), doc_ids=torch.arange(12), scores=s)
    ours = GCLLoss(temperature=0.05, cosent_weight=1.0)(q, d, w, **ids) - GCLLoss(temperature=0.05)(q, d, w, **ids)
    theirs = CoSENTLoss(torch.nn.Identity(), scale=20.0).compute_loss_from_embeddings([q, d], s)
    torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-9, atol=1e-9)


def test_by_hand_three_rows():
    """cosines 0.9, 0.5, 0.8 with grades 3, 2, 1 at T = 0.5: log(1 + e^{2(0.5-0.9)} + e^{2(0.8-0.9)} + e^{2(0.8-0.5)})."""
    c = torch.tensor([0.9, 0.5, 0.8], dtype=torch.float64)
    q = torch.eye(3, dtype=torch.float64)
    d = torch.zeros(3, 3, dtype=torch.float64)
    for i in range(3):  # d_i = c_i e_i + sqrt(1 - c_i^2) e_{i+1 mod 3}: q_i . d_i = c_i
        d[i, i] = c[i]
        d[i, (i + 1) % 3] = math.sqrt(1 - float(c[i]) ** 2)
    s = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    w = torch.ones(3, dtype=torch.float64)
    ids = dict(query_ids=torch.arange(3), doc_ids=torch.arange(3), scores=s)
    got = GCLLoss(temperature=0.5, cosent_weight=1.0)(q, d, w, **ids) - GCLLoss(temperature=0.5)(q, d, w, **ids)
    want = math.log(1 + math.exp(2 * (0.5 - 0.9)) + math.exp(2 * (0.8 - 0.9)) + math.exp(2 * (0.8 - 0.5)))
    assert float(got) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("targets, same_query", [("hard", "mask"), ("hard", "lower"), ("soft", "mask")])
def test_off_or_without_pairs_is_the_old_loss_bit_for_bit(targets, same_query):
    q, d = unit(6, 4, 7), unit(6, 4, 8)
    w = torch.tensor([1.0, 0.5, 1.0, 0.2, 1.0, 0.7], dtype=torch.float64)
    ids = dict(query_ids=torch.tensor([0, 0, 1, 1, 2, 2]), doc_ids=torch.arange(6))
    graded = torch.tensor([3.0, 2.0, 3.0, 1.0, 2.0, 1.0], dtype=torch.float64)
    old = GCLLoss(targets=targets, same_query=same_query)(q, d, w, scores=graded, **ids)
    assert torch.equal(GCLLoss(targets=targets, same_query=same_query, cosent_weight=0.0)(q, d, w, scores=graded, **ids), old)
    flat = torch.full((6,), 2.0, dtype=torch.float64)  # one grade: no ordered pair, the term is 0
    assert torch.equal(GCLLoss(targets=targets, same_query=same_query, cosent_weight=3.0)(q, d, w, scores=flat, **ids),
                       GCLLoss(targets=targets, same_query=same_query)(q, d, w, scores=flat, **ids))
    assert float(GCLLoss(targets=targets, same_query=same_query, cosent_weight=1.0)(q, d, w, scores=graded, **ids)) > float(old)


def test_term_prefers_the_graded_order_across_queries():
    """Two queries, each with one document: the term is lower when the higher-graded pair has the higher cosine."""
    q = torch.eye(2, dtype=torch.float64)
    right = torch.tensor([[0.9, math.sqrt(1 - 0.81)], [math.sqrt(1 - 0.25), 0.5]], dtype=torch.float64)
    wrong = torch.tensor([[0.5, math.sqrt(1 - 0.25)], [math.sqrt(1 - 0.81), 0.9]], dtype=torch.float64)
    s, w = torch.tensor([3.0, 2.0], dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    term = GCLLoss(cosent_weight=1.0)
    ids = dict(query_ids=torch.arange(2), doc_ids=torch.arange(2), scores=s)
    assert float(term(q, right, w, **ids)) - float(GCLLoss()(q, right, w, **ids)) < \
        float(term(q, wrong, w, **ids)) - float(GCLLoss()(q, wrong, w, **ids))


@pytest.mark.parametrize("mu", [-1.0, float("nan"), float("inf")])
def test_bad_weight_is_refused(mu):
    with pytest.raises(ValueError, match="cosent_weight must be a finite number >= 0"):
        GCLLoss(cosent_weight=mu)


def test_needs_scores():
    q, d = unit(3, 4, 0), unit(3, 4, 1)
    with pytest.raises(ValueError, match="cosent_weight > 0 needs scores"):
        GCLLoss(cosent_weight=1.0)(q, d, torch.ones(3, dtype=torch.float64))


# --------------------------------------------------------------------------- through the trainer
def test_trainer_step_loss_has_the_term(tmp_path):
    tr = _trainer(tmp_path, "cos", **{"loss.cosent_weight": 0.5, "batch.batch_size": 16})
    assert tr.loss_fn.cosent_weight == 0.5
    state = tr.sampler.state_dict()
    rows = tr.sampler.next_batch()
    tr.sampler.load_state_dict(state)
    p = tr.pairs
    assert len(set(p.score[rows].tolist())) > 1  # graded pairs: the term is on
    tr.model.eval()
    with torch.no_grad():
        q = tr.encoding.q_tokens.embed(tr.model, p.query_code[rows]).double()
        d = tr.encoding.d_tokens.embed(tr.model, p.doc_code[rows]).double()
        w = torch.as_tensor(p.weight[rows])
        meta = dict(query_ids=torch.as_tensor(p.query_code[rows]), doc_ids=torch.as_tensor(p.doc_code[rows]),
                    scores=torch.as_tensor(p.score[rows]))
        want = GCLLoss(cosent_weight=0.5)(q, d, w, **meta)
        assert float(want) > float(GCLLoss()(q, d, w, **meta))
    assert tr.train_step() == pytest.approx(float(want), abs=1e-5)


def test_grad_cache_equals_plain_step(tmp_path):
    items = {"batch.batch_size": 16, "optim.clip_grad_norm": 0.0, "loss.cosent_weight": 1.0}
    plain = _trainer(tmp_path, "plain", **items)
    cached = _trainer(tmp_path, "gc", **items, **{"batch.grad_cache_chunk": 4})
    assert plain.train_step() == pytest.approx(cached.train_step(), abs=1e-6)
    g_plain, g_cached = grads(plain), grads(cached)
    assert any(v.abs().sum() > 0 for v in g_plain.values())
    assert_states_close(g_plain, g_cached, atol=1e-6, rtol=1e-5)


def test_sentence_transformers_wrapper_passes_the_term():
    pytest.importorskip("sentence_transformers")
    from gcl.sentence_transformers import GCLLoss as STGCLLoss

    st_loss = STGCLLoss(None, score_range=(1.0, 3.0), cosent_weight=2.0)
    assert st_loss.get_config_dict()["cosent_weight"] == 2.0
    got, qn, dn, w, batch = wrapper_case(st_loss, seed=2)
    want = GCLLoss(cosent_weight=2.0)(qn, dn, w, query_ids=batch.query_ids, doc_ids=batch.doc_ids, scores=batch.scores)
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-5, atol=1e-5)


def test_cli_train_with_the_term(tmp_path, capsys):
    from gcl.cli.main import main

    assert main(_cli_args(tmp_path, "loss.cosent_weight=0.5")) == 0
    assert "trained 3 steps" in capsys.readouterr().err
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["loss"]["cosent_weight"] == 0.5


def test_cli_negative_weight_exits_2(tmp_path, capsys):
    from gcl.cli.main import main

    assert main(_cli_args(tmp_path, "loss.cosent_weight=-1")) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(lines) == 1 and "loss.cosent_weight" in lines[0], err
    assert "Traceback" not in err
