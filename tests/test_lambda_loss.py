"""GCLLoss(lambda_weight=λ): the ΔnDCG-weighted pairwise term against a naive loop, by hand, edge cases."""

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
def ref_pair_term(q, d, w, scale, *, qids, scores, lo, hi) -> torch.Tensor:
    """docs/losses.md "Pairwise term", one anchor and one pair at a time (float64)."""
    b = q.shape[0]
    gain = [1.0 if hi == lo else min(max((s - lo) / (hi - lo), 0.0), 1.0) for s in scores]
    num, den = q.new_zeros(()), 0.0
    if qids is None:
        return num
    for r in range(b):
        if w[r] <= 0:
            continue
        docs = [j for j in range(b) if qids[j] == qids[r] and w[j] > 0]
        logit = {j: scale * (q[r] * d[j]).sum() for j in docs}
        ranked = sorted(docs, key=lambda j: (-float(logit[j].detach()), j))  # ties: lower column first
        rank = {j: pos + 1 for pos, j in enumerate(ranked)}
        ideal = sorted((gain[j] for j in docs), reverse=True)
        idcg = sum(g / math.log2(pos + 2) for pos, g in enumerate(ideal))
        for i in docs:
            for j in docs:
                if not scores[i] > scores[j] or idcg == 0:
                    continue
                swap = abs(gain[i] - gain[j]) * abs(1 / math.log2(1 + rank[i]) - 1 / math.log2(1 + rank[j]))
                a = swap / idcg / len(docs)
                num = num + a * torch.log1p(torch.exp(-(logit[i] - logit[j])))
                den += a
    return num / den if den > 0 else num * 0


@dataclass
class Case:
    b: int
    dim: int
    seed: int
    qids: list[int] | None
    dids: list[int] | None
    scores: list[float]
    weights: list[float]
    n_hard: int
    temperature: float
    learnable: bool
    symmetric: bool
    targets: str
    same_query: str
    lam: float


@st.composite
def cases(draw: st.DrawFn) -> Case:
    b = draw(st.integers(1, 10))
    n_q = draw(st.integers(1, 3))
    targets = draw(st.sampled_from(["hard", "soft"]))
    weights = draw(st.lists(st.sampled_from([0.0, 0.1, 0.55, 1.0]), min_size=b, max_size=b))
    if sum(weights) == 0:
        weights[draw(st.integers(0, b - 1))] = 1.0
    return Case(
        b=b, dim=draw(st.integers(2, 5)), seed=draw(st.integers(0, 2**31 - 1)),
        qids=draw(st.none() | st.lists(st.integers(0, n_q - 1), min_size=b, max_size=b)),
        dids=draw(st.none() | st.lists(st.integers(0, 6), min_size=b, max_size=b)),
        scores=draw(st.lists(st.sampled_from([1.0, 1.5, 2.0, 2.5, 3.0]), min_size=b, max_size=b)),
        weights=weights, n_hard=draw(st.integers(0, 2)),
        temperature=draw(st.sampled_from([0.05, 0.2, 1.0])), learnable=draw(st.booleans()),
        symmetric=draw(st.booleans()), targets=targets,
        same_query="mask" if targets == "soft" else draw(st.sampled_from(["mask", "lower", "keep"])),
        lam=draw(st.sampled_from([0.3, 1.0, 4.0])),
    )  # fmt: skip


def compare_with_reference(c: Case, dtype: torch.dtype, tol: float) -> None:
    opts = dict(temperature=c.temperature, symmetric=c.symmetric, targets=c.targets, same_query=c.same_query)
    loss_fn = GCLLoss(**opts, learnable_temperature=c.learnable, lambda_weight=c.lam, score_range=(1.0, 3.0)).to(dtype)
    q = unit(c.b, c.dim, c.seed, dtype).requires_grad_()
    d = unit(c.b, c.dim, c.seed + 1, dtype).requires_grad_()
    hn = unit(c.n_hard, c.dim, c.seed + 2, dtype) if c.n_hard else None
    kw = dict(query_ids=longs(c.qids), doc_ids=longs(c.dids), scores=torch.tensor(c.scores, dtype=dtype))
    ours = loss_fn(q, d, torch.tensor(c.weights, dtype=dtype), hard_neg_emb=hn, **kw)
    assert ours.shape == () and ours.dtype == dtype
    ours.backward()

    # reference: the base loss (λ = 0, tested against its own loops elsewhere) + λ * the naive pair term
    q64 = q.detach().double().requires_grad_()
    d64 = d.detach().double().requires_grad_()
    base_fn = GCLLoss(**opts, learnable_temperature=c.learnable).double()
    with torch.no_grad():
        if c.learnable:
            base_fn.logit_scale.copy_(loss_fn.logit_scale.detach().double())
    scale = base_fn.logit_scale.exp() if c.learnable else torch.tensor(1.0 / c.temperature, dtype=torch.float64)
    base = base_fn(q64, d64, torch.tensor(c.weights, dtype=torch.float64),
                   hard_neg_emb=None if hn is None else hn.double(),
                   **{**kw, "scores": torch.tensor(c.scores, dtype=torch.float64)})  # fmt: skip
    ref = base + c.lam * ref_pair_term(q64, d64, c.weights, scale, qids=c.qids, scores=c.scores, lo=1.0, hi=3.0)
    ref.backward()

    close = dict(rtol=tol, atol=tol)
    grad = lambda t: torch.zeros_like(t) if t.grad is None else t.grad  # noqa: E731
    torch.testing.assert_close(ours.detach().double(), ref.detach(), **close)
    torch.testing.assert_close(q.grad.double(), grad(q64), **close)
    torch.testing.assert_close(d.grad.double(), grad(d64), **close)
    if c.learnable:
        torch.testing.assert_close(loss_fn.logit_scale.grad.double(), base_fn.logit_scale.grad, **close)


@settings(max_examples=80, **HYPO)
@given(c=cases())
def test_pair_term_matches_naive_reference_float64(c: Case) -> None:
    compare_with_reference(c, torch.float64, 1e-10)


@settings(max_examples=30, **HYPO)
@given(c=cases())
def test_pair_term_matches_naive_reference_float32(c: Case) -> None:
    compare_with_reference(c, torch.float32, 2e-5)


def test_gradcheck_float64() -> None:
    q, d = unit(6, 3, 80).requires_grad_(), unit(6, 3, 81).requires_grad_()
    kw = dict(query_ids=torch.tensor([0, 0, 0, 1, 1, 2]), doc_ids=torch.arange(6),
              scores=torch.tensor([3.0, 2.0, 1.0, 1.0, 3.0, 2.0], dtype=torch.float64))  # fmt: skip
    w = torch.tensor([1.0, 0.5, 0.1, 0.1, 1.0, 0.5], dtype=torch.float64)
    for targets, same_query in (("hard", "lower"), ("soft", "mask")):
        loss_fn = GCLLoss(temperature=0.3, targets=targets, same_query=same_query, lambda_weight=2.0,
                          score_range=(1.0, 3.0))  # fmt: skip
        assert torch.autograd.gradcheck(lambda a, b: loss_fn(a, b, w, **kw), (q, d))


# --------------------------------------------------------------------------- by hand
def test_one_query_three_grades_by_hand() -> None:
    """Grades 3 > 2 > 1 (gains 1, 0.5, 0); the model ranks doc 2 first, then 0, then 1."""
    q = unit(1, 3, 1).repeat(3, 1)
    near, far = q[0] * 0.9 + unit(1, 3, 2)[0] * 0.1, q[0] * 0.2 + unit(1, 3, 3)[0] * 0.8
    d = F.normalize(torch.stack([near, far, q[0]]), dim=1)
    f = (q[0] @ d.T) / 0.05
    assert f[2] > f[0] > f[1]  # ranks: doc 2 -> 1, doc 0 -> 2, doc 1 -> 3
    disc = {1: 1.0, 2: 1 / math.log2(3), 3: 0.5}
    # |ΔNDCG| up to the common factor 1 / IDCG (it cancels in the normalisation, as does 1/|R_q|)
    swaps = {(0, 1): 0.5 * (disc[2] - disc[3]), (0, 2): 1.0 * (disc[1] - disc[2]), (1, 2): 0.5 * (disc[1] - disc[3])}
    expected = sum(a * math.log1p(math.exp(-(f[i] - f[j]))) for (i, j), a in swaps.items()) / sum(swaps.values())
    kw = dict(query_ids=torch.zeros(3, dtype=torch.long), doc_ids=torch.arange(3), scores=torch.tensor([3.0, 2.0, 1.0]))
    base = GCLLoss(same_query="lower")(q, d, torch.ones(3), **kw)
    got = GCLLoss(same_query="lower", lambda_weight=0.7, score_range=(1.0, 3.0))(q, d, torch.ones(3), **kw)
    torch.testing.assert_close(got - base, 0.7 * torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("targets, same_query", [("hard", "mask"), ("hard", "lower"), ("soft", "mask")])
def test_lambda_zero_is_the_old_loss_bit_for_bit(targets: str, same_query: str) -> None:
    def run(**extra):
        q, d = unit(8, 5, 90).requires_grad_(), unit(8, 5, 91).requires_grad_()
        loss = GCLLoss(targets=targets, same_query=same_query, **extra)(
            q, d, torch.rand(8, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.1,
            query_ids=torch.tensor([0, 0, 0, 1, 1, 2, 2, 3]), doc_ids=torch.arange(8),
            scores=torch.tensor([3.0, 2, 1, 1, 3, 2, 2, 1]), hard_neg_emb=unit(2, 5, 92))
        loss.backward()
        return loss.detach(), q.grad, d.grad

    old, zero = run(), run(lambda_weight=0.0, score_range=(1.0, 3.0))
    assert all(torch.equal(a, b) for a, b in zip(old, zero))
    assert not torch.equal(old[0], run(lambda_weight=1e-3, score_range=(1.0, 3.0))[0])


def test_no_pairs_adds_nothing() -> None:
    """Distinct queries, or a query whose documents share one grade: the term is 0, not NaN."""
    q, d = unit(4, 5, 93), unit(4, 5, 94)
    lam = GCLLoss(lambda_weight=5.0, score_range=(1.0, 3.0))
    base = GCLLoss()
    for qids, scores in (([0, 1, 2, 3], [3.0, 1, 2, 1]), ([0, 0, 1, 1], [2.0, 2, 3, 3]), (None, [3.0, 1, 2, 1])):
        kw = dict(query_ids=longs(qids), scores=torch.tensor(scores))
        assert torch.equal(lam(q, d, torch.ones(4), **kw), base(q, d, torch.ones(4), **kw))
    # equal scores everywhere: score_range (2, 2) gives every gain 1, so no swap changes nDCG
    same = GCLLoss(lambda_weight=5.0, score_range=(2.0, 2.0))
    kw = dict(query_ids=torch.zeros(4, dtype=torch.long), scores=torch.full((4,), 2.0))
    assert torch.equal(same(q, d, torch.ones(4), **kw), base(q, d, torch.ones(4), **kw))


def test_pair_term_prefers_the_graded_order() -> None:
    """Swapping the embeddings of a query's best and worst documents raises the term."""
    q = unit(1, 4, 95).repeat(3, 1)
    good = torch.stack([q[0], F.normalize(q[0] + unit(1, 4, 96)[0], dim=0), unit(1, 4, 97)[0]])
    bad = good[[2, 1, 0]]
    kw = dict(query_ids=torch.zeros(3, dtype=torch.long), doc_ids=torch.arange(3), scores=torch.tensor([3.0, 2, 1]))
    fn = GCLLoss(same_query="mask", lambda_weight=1.0, score_range=(1.0, 3.0))
    base = GCLLoss(same_query="mask")
    assert fn(q, good, torch.ones(3), **kw) - base(q, good, torch.ones(3), **kw) < \
        fn(q, bad, torch.ones(3), **kw) - base(q, bad, torch.ones(3), **kw)


# --------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(lambda_weight=-0.1, score_range=(1, 3)), "lambda_weight must be"),
        (dict(lambda_weight=math.inf, score_range=(1, 3)), "lambda_weight must be"),
        (dict(lambda_weight=1.0), "needs score_range"),
        (dict(lambda_weight=1.0, score_range=(3, 1)), "lowest <= highest"),
        (dict(lambda_weight=1.0, score_range=(1, math.nan)), "score_range must be finite"),
        (dict(lambda_weight=1.0, score_range="ab"), "score_range must be"),
    ],
)
def test_bad_constructor_args(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GCLLoss(**kwargs)


def test_bad_forward_inputs() -> None:
    q, d = unit(3, 4, 98), unit(3, 4, 99)
    fn = GCLLoss(lambda_weight=1.0, score_range=(1.0, 3.0))
    with pytest.raises(ValueError, match="needs scores"):
        fn(q, d, torch.ones(3), query_ids=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="must lie in score_range"):
        fn(q, d, torch.ones(3), query_ids=torch.zeros(3, dtype=torch.long), scores=torch.tensor([1.0, 2.0, 4.0]))
