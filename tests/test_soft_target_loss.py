"""GCLLoss(targets="soft") against a naive loop reference (values and gradients), reductions, edge cases."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gcl.losses import GCLLoss

HYPO = dict(deadline=None, derandomize=True, database=None)


def unit(n: int, d: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).to(dtype)


def longs(xs: list[int] | None) -> torch.Tensor | None:
    return None if xs is None else torch.tensor(xs, dtype=torch.long)


# --------------------------------------------------------------------------- naive reference
def ref_soft(
    q: torch.Tensor,
    d: torch.Tensor,
    w: list[float],
    scale: torch.Tensor,
    *,
    qids: list[int] | None,
    dids: list[int] | None,
    hn: torch.Tensor | None,
    hn_dids: list[int] | None,
    same_doc: str,
    symmetric: bool,
    tau: float,
) -> torch.Tensor:
    """docs/losses.md "Soft targets", one group, row and column at a time (float64, autograd-friendly)."""
    b = q.shape[0]

    def dot(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return (a * c).sum()

    def logsumexp(xs: list[torch.Tensor]) -> torch.Tensor:
        m = max(float(x.detach()) for x in xs)
        total = xs[0] * 0
        for x in xs:
            total = total + torch.exp(x - m)
        return m + torch.log(total)

    def direction(anchor: list[int] | None, cand: list[int] | None, score, extra) -> torch.Tensor:
        """score(r, j): logit of anchor row r against column j; extra(r): hard-negative logits."""
        key = anchor if anchor is not None else list(range(b))
        groups = []
        for g in dict.fromkeys(key):  # distinct anchors, first-seen order
            targets = [j for j in range(b) if key[j] == g]
            rows = [r for r in targets if w[r] > 0]
            if not rows:
                continue
            powered = {j: (w[j] ** (1.0 / tau) if w[j] > 0 else 0.0) for j in targets}
            z = sum(powered.values())
            target_cands = {cand[j] for j in targets} if cand is not None else set()

            def copy(k: int) -> bool:  # the same candidate as a target, in another column
                return same_doc == "mask" and cand is not None and k not in targets and cand[k] in target_cands

            per_row = []
            for r in rows:
                logits = [score(r, k) for k in range(b) if not copy(k)]
                logits += extra(r, target_cands)
                lse = logsumexp(logits)
                ce = q.new_zeros(())
                for j in targets:
                    ce = ce - (powered[j] / z) * (score(r, j) - lse)
                per_row.append(ce)
            groups.append(sum(per_row) / len(per_row))
        return sum(groups) / len(groups)

    def hard(r: int, target_docs: set) -> list[torch.Tensor]:
        if hn is None:
            return []
        out = []
        for k in range(hn.shape[0]):
            if same_doc == "mask" and dids is not None and hn_dids is not None and hn_dids[k] in target_docs:
                continue
            out.append(scale * dot(q[r], hn[k]))
        return out

    loss_qd = direction(qids, dids, lambda r, j: scale * dot(q[r], d[j]), hard)
    if not symmetric:
        return loss_qd
    loss_dq = direction(dids, qids, lambda r, j: scale * dot(d[r], q[j]), lambda r, t: [])
    return (loss_qd + loss_dq) / 2


# --------------------------------------------------------------------------- random cases
@dataclass
class Case:
    b: int
    dim: int
    seed: int
    qids: list[int] | None
    dids: list[int] | None
    weights: list[float]
    n_hard: int
    hn_dids: list[int] | None
    temperature: float
    learnable: bool
    symmetric: bool
    same_doc: str
    tau: float


@st.composite
def cases(draw: st.DrawFn) -> Case:
    b = draw(st.integers(1, 10))
    n_q = draw(st.integers(1, 4))
    n_d = draw(st.integers(1, 6))
    qids = draw(st.none() | st.lists(st.integers(0, n_q - 1), min_size=b, max_size=b))
    dids = draw(st.none() | st.lists(st.integers(0, n_d - 1), min_size=b, max_size=b))
    weights = draw(st.lists(st.sampled_from([0.0, 0.1, 0.55, 1.0, 3.0]), min_size=b, max_size=b))
    if sum(weights) == 0:
        weights[draw(st.integers(0, b - 1))] = 1.0
    n_hard = draw(st.integers(0, 3))
    hn_dids = draw(st.none() | st.lists(st.integers(0, n_d - 1), min_size=n_hard, max_size=n_hard))
    return Case(
        b=b, dim=draw(st.integers(2, 5)), seed=draw(st.integers(0, 2**31 - 1)), qids=qids, dids=dids,
        weights=weights, n_hard=n_hard, hn_dids=hn_dids,
        temperature=draw(st.sampled_from([0.05, 0.1, 0.5, 1.0])), learnable=draw(st.booleans()),
        symmetric=draw(st.booleans()), same_doc=draw(st.sampled_from(["mask", "keep"])),
        tau=draw(st.sampled_from([1.0, 0.5, 0.25, 2.0])),
    )  # fmt: skip


def compare_with_reference(c: Case, dtype: torch.dtype, tol: float) -> None:
    loss_fn = GCLLoss(temperature=c.temperature, learnable_temperature=c.learnable, symmetric=c.symmetric,
                      same_doc=c.same_doc, targets="soft", target_temperature=c.tau).to(dtype)  # fmt: skip
    q = unit(c.b, c.dim, c.seed, dtype).requires_grad_()
    d = unit(c.b, c.dim, c.seed + 1, dtype).requires_grad_()
    hn = unit(c.n_hard, c.dim, c.seed + 2, dtype).requires_grad_() if c.n_hard else None
    ours = loss_fn(q, d, torch.tensor(c.weights, dtype=dtype), query_ids=longs(c.qids), doc_ids=longs(c.dids),
                   hard_neg_emb=hn, hard_neg_doc_ids=longs(c.hn_dids) if hn is not None else None)  # fmt: skip
    assert ours.shape == () and ours.dtype == dtype
    ours.backward()

    q64 = q.detach().double().requires_grad_()
    d64 = d.detach().double().requires_grad_()
    hn64 = hn.detach().double().requires_grad_() if hn is not None else None
    if c.learnable:
        theta = loss_fn.logit_scale.detach().double().requires_grad_()
        scale = theta.exp()
    else:
        scale = torch.tensor(1.0 / c.temperature, dtype=torch.float64)
    ref = ref_soft(q64, d64, c.weights, scale, qids=c.qids, dids=c.dids, hn=hn64,
                   hn_dids=c.hn_dids if hn is not None else None, same_doc=c.same_doc,
                   symmetric=c.symmetric, tau=c.tau)  # fmt: skip
    ref.backward()

    close = dict(rtol=tol, atol=tol)
    grad = lambda t: torch.zeros_like(t) if t.grad is None else t.grad  # noqa: E731
    torch.testing.assert_close(ours.detach().double(), ref.detach(), **close)
    torch.testing.assert_close(q.grad.double(), grad(q64), **close)
    torch.testing.assert_close(d.grad.double(), grad(d64), **close)
    if hn is not None:
        torch.testing.assert_close(hn.grad.double(), grad(hn64), **close)
    if c.learnable:
        torch.testing.assert_close(loss_fn.logit_scale.grad.double(), theta.grad, **close)


@settings(max_examples=80, **HYPO)
@given(c=cases())
def test_soft_matches_naive_reference_float64(c: Case) -> None:
    compare_with_reference(c, torch.float64, 1e-10)


@settings(max_examples=30, **HYPO)
@given(c=cases())
def test_soft_matches_naive_reference_float32(c: Case) -> None:
    compare_with_reference(c, torch.float32, 1e-5)


def test_reference_check_can_fail() -> None:
    """The comparison is sharp: the hard loss on a batch with a shared query differs from soft."""
    q, d, qids = unit(3, 4, 0), unit(3, 4, 1), [0, 0, 1]
    w = [1.0, 0.5, 1.0]
    ref = ref_soft(q, d, w, torch.tensor(10.0, dtype=torch.float64), qids=qids, dids=None, hn=None,
                   hn_dids=None, same_doc="mask", symmetric=True, tau=1.0)  # fmt: skip
    soft = GCLLoss(temperature=0.1, targets="soft")(q, d, torch.tensor(w), query_ids=longs(qids))
    torch.testing.assert_close(soft, ref, rtol=1e-12, atol=1e-12)
    for other in (GCLLoss(temperature=0.1), GCLLoss(temperature=0.1, targets="soft", target_temperature=0.5)):
        assert not torch.allclose(other(q, d, torch.tensor(w), query_ids=longs(qids)), ref, rtol=1e-6, atol=1e-6)


def test_gradcheck_float64() -> None:
    """torch.autograd.gradcheck on q, d and hard negatives (shared query, copies, zero weight)."""
    q, d, hn = (unit(n, 3, s).requires_grad_() for n, s in ((5, 70), (5, 71), (2, 72)))
    loss_fn = GCLLoss(temperature=0.2, targets="soft", target_temperature=0.5)
    kw = dict(query_ids=torch.tensor([0, 0, 0, 1, 2]), doc_ids=torch.tensor([3, 4, 5, 3, 6]),
              hard_neg_doc_ids=torch.tensor([4, 9]))  # fmt: skip
    w = torch.tensor([1.0, 0.4, 0.0, 1.0, 0.7], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, c: loss_fn(a, b, w, hard_neg_emb=c, **kw), (q, d, hn))


# --------------------------------------------------------------------------- what it reduces to
def clip_loss(logits: torch.Tensor) -> torch.Tensor:
    labels = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@pytest.mark.parametrize("b", [1, 2, 7])
def test_distinct_ids_is_clip_and_mnrl_for_any_weights(b: int) -> None:
    q, d, hn = unit(b, 8, b), unit(b, 8, b + 100), unit(3, 8, b + 200)
    w = torch.rand(b, generator=torch.Generator().manual_seed(b), dtype=torch.float64) + 0.1
    ids = dict(query_ids=torch.arange(b), doc_ids=torch.arange(b) + 50)
    for kw in ({}, ids):
        got = GCLLoss(temperature=0.07, targets="soft")(q, d, w, **kw)
        torch.testing.assert_close(got, clip_loss(q @ d.T / 0.07), rtol=1e-12, atol=1e-12)
        one_way = GCLLoss(temperature=0.07, targets="soft", symmetric=False)(q, d, w, hard_neg_emb=hn, **kw)
        expected = F.cross_entropy(q @ torch.cat([d, hn]).T / 0.07, torch.arange(b))  # MNRL, scale 1/T
        torch.testing.assert_close(one_way, expected, rtol=1e-12, atol=1e-12)


def test_query_with_one_document_is_masked_infonce() -> None:
    """Query 0 has one document (doc 5), which is also row 3's document: the copy is masked."""
    q, d = unit(4, 6, 1), unit(4, 6, 2)
    d[3] = d[0]  # the same document in two rows
    L = q @ d.T / 0.05  # noqa: N806
    kw = dict(query_ids=torch.tensor([0, 1, 1, 2]), doc_ids=torch.tensor([5, 6, 7, 5]))
    only_q0 = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)  # other queries: no anchors
    got = GCLLoss(targets="soft", symmetric=False)(q, d, only_q0, **kw)
    torch.testing.assert_close(got, torch.logsumexp(L[0, :3], 0) - L[0, 0])
    keep = GCLLoss(targets="soft", symmetric=False, same_doc="keep")(q, d, only_q0, **kw)
    torch.testing.assert_close(keep, torch.logsumexp(L[0], 0) - L[0, 0])


def test_equal_grades_give_uniform_targets_and_queries_weigh_alike() -> None:
    """Query 0 has three documents of one grade, query 1 one document: mean of the two queries."""
    q = torch.cat([unit(1, 6, 3).repeat(3, 1), unit(1, 6, 4)])
    d = unit(4, 6, 5)
    L = q @ d.T / 0.05  # noqa: N806
    kw = dict(query_ids=torch.tensor([0, 0, 0, 1]), doc_ids=torch.arange(4))
    loss_fn = GCLLoss(targets="soft", symmetric=False)
    uniform = -(L[0, :3] - torch.logsumexp(L[0], 0)).mean()
    expected = (uniform + torch.logsumexp(L[3], 0) - L[3, 3]) / 2
    for w in ([0.3, 0.3, 0.3, 1.0], [2.0, 2.0, 2.0, 0.1]):  # any equal weights within query 0
        torch.testing.assert_close(loss_fn(q, d, torch.tensor(w, dtype=torch.float64), **kw), expected)


def test_targets_follow_weights_and_zero_weight_stays_a_negative() -> None:
    q = unit(1, 6, 6).repeat(3, 1)
    d = unit(3, 6, 7)
    L = (q @ d.T / 0.05)[0]  # noqa: N806  (all rows have the same query embedding)
    kw = dict(query_ids=torch.zeros(3, dtype=torch.long), doc_ids=torch.arange(3))
    w = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    log_p = L - torch.logsumexp(L, 0)  # doc 2 (zero weight) is in the denominator
    expected = -(2 / 3 * log_p[0] + 1 / 3 * log_p[1])
    torch.testing.assert_close(GCLLoss(targets="soft", symmetric=False)(q, d, w, **kw), expected)
    # target temperature: w^(1/tau) -> tau = 0.5 squares the weights; tiny tau -> argmax; large -> uniform
    sq = GCLLoss(targets="soft", symmetric=False, target_temperature=0.5)(q, d, w, **kw)
    torch.testing.assert_close(sq, -(0.8 * log_p[0] + 0.2 * log_p[1]))
    sharp = GCLLoss(targets="soft", symmetric=False, target_temperature=1e-3)(q, d, w, **kw)
    torch.testing.assert_close(sharp, -log_p[0])
    flat = GCLLoss(targets="soft", symmetric=False, target_temperature=1e6)(q, d, w, **kw)
    torch.testing.assert_close(flat, -(log_p[0] + log_p[1]) / 2, rtol=1e-5, atol=1e-5)


def test_document_to_query_targets_the_queries_that_judged_it() -> None:
    """d->q: one document judged by two queries (weights 1, 0.25): targets 0.8 / 0.2 over them."""
    q, d = unit(3, 6, 8), unit(1, 6, 9).repeat(3, 1)
    d[2] = unit(1, 6, 10)[0]
    kw = dict(query_ids=torch.tensor([0, 1, 2]), doc_ids=torch.tensor([7, 7, 8]))
    w = torch.tensor([1.0, 0.25, 1.0], dtype=torch.float64)
    Lt = (q @ d.T / 0.05).T  # noqa: N806  Lt[i, j] = d_i . q_j / T
    sym = GCLLoss(targets="soft", symmetric=True)(q, d, w, **kw)
    one = GCLLoss(targets="soft", symmetric=False)(q, d, w, **kw)
    log_p = Lt[0] - torch.logsumexp(Lt[0], 0)
    doc7 = -(0.8 * log_p[0] + 0.2 * log_p[1])
    doc8 = torch.logsumexp(Lt[2], 0) - Lt[2, 2]
    torch.testing.assert_close(2 * sym - one, (doc7 + doc8) / 2)


@pytest.mark.parametrize("symmetric", [True, False])
def test_per_query_weight_scale_invariance(symmetric: bool) -> None:
    """Targets use weight ratios within a query only: rescaling one query's weights changes nothing."""
    q, d = unit(6, 5, 11), unit(6, 5, 12)
    kw = dict(query_ids=torch.tensor([0, 0, 1, 1, 1, 2]), doc_ids=torch.arange(6))
    w = torch.tensor([1.0, 0.3, 0.7, 0.2, 1.0, 0.5], dtype=torch.float64)
    loss_fn = GCLLoss(targets="soft", symmetric=symmetric)
    scaled = w.clone()
    scaled[2:5] *= 13.0
    torch.testing.assert_close(loss_fn(q, d, scaled, **kw), loss_fn(q, d, w, **kw), rtol=1e-12, atol=1e-12)


def test_hard_is_the_default_and_unchanged() -> None:
    batch = dict(query_emb=unit(6, 5, 13), doc_emb=unit(6, 5, 14), weights=torch.rand(6, dtype=torch.float64) + 0.1,
                 query_ids=torch.tensor([0, 0, 1, 1, 2, 2]), doc_ids=torch.arange(6), scores=torch.arange(6.0))
    assert GCLLoss().targets == "hard" and GCLLoss().target_temperature == 1.0
    assert torch.equal(GCLLoss(same_query="lower", targets="hard")(**batch), GCLLoss(same_query="lower")(**batch))
    assert not torch.allclose(GCLLoss(targets="soft")(**batch), GCLLoss()(**batch))


def test_bfloat16_autocast_computes_in_float32() -> None:
    q, d = unit(8, 16, 40, torch.float32), unit(8, 16, 41, torch.float32)
    kw = dict(query_ids=torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    loss_fn = GCLLoss(targets="soft")
    plain = loss_fn(q, d, torch.ones(8), **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss_fn(q, d, torch.ones(8), **kw)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain, rtol=0, atol=0)
    assert torch.isfinite(GCLLoss(temperature=1e-4, targets="soft")(q, q, torch.ones(8), **kw))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(targets="listnet"), "targets must be one of"),
        (dict(targets="soft", target_temperature=0.0), "target_temperature must be"),
        (dict(targets="soft", target_temperature=math.nan), "target_temperature must be"),
        (dict(target_temperature=0.5), "applies to targets='soft' only"),
        (dict(targets="soft", same_query="lower"), "has no effect with targets='soft'"),
    ],
)
def test_bad_constructor_args(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GCLLoss(**kwargs)
