"""GCLLoss against a naive loop reference (values and gradients), CLIP / MNRL, hand-built cases."""

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


def one_hot(i: int, b: int) -> torch.Tensor:
    """Weights selecting row i alone: the loss is then row i's own term l_i."""
    return F.one_hot(torch.tensor(i), b).double()


# --------------------------------------------------------------------------- naive reference
def ref_loss(
    q: torch.Tensor,
    d: torch.Tensor,
    w: list[float],
    scale: torch.Tensor,
    *,
    qids: list[int] | None,
    dids: list[int] | None,
    scores: list[float] | None,
    hn: torch.Tensor | None,
    hn_dids: list[int] | None,
    same_query: str,
    same_doc: str,
    symmetric: bool,
) -> torch.Tensor:
    """The docstring's equation, one row and one column at a time (float64, autograd-friendly)."""
    b = q.shape[0]

    def dot(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return (a * c).sum()

    def logsumexp(xs: list[torch.Tensor]) -> torch.Tensor:
        m = max(float(x.detach()) for x in xs)  # a constant shift: does not change value or gradient
        total = xs[0] * 0
        for x in xs:
            total = total + torch.exp(x - m)
        return m + torch.log(total)

    def q2d_allowed(i: int, j: int) -> bool:
        if j == i:
            return True
        if same_doc == "mask" and dids is not None and dids[j] == dids[i]:
            return False  # the same document: not a negative
        if qids is not None and qids[j] == qids[i]:  # another graded document of query i
            if same_query == "mask":
                return False
            if same_query == "lower":
                return scores[j] < scores[i]
        return True

    def d2q_allowed(i: int, j: int) -> bool:
        if j == i:
            return True
        if same_doc == "mask" and qids is not None and qids[j] == qids[i]:
            return False  # the same query as the positive: not a negative
        if dids is not None and dids[j] == dids[i]:  # document i judged for another query
            if same_query == "mask":
                return False
            if same_query == "lower":
                return scores[j] < scores[i]
        return True

    def hard_allowed(i: int, k: int) -> bool:
        return not (same_doc == "mask" and dids is not None and hn_dids is not None and hn_dids[k] == dids[i])

    total_w = sum(w)
    loss_qd = q.new_zeros(())
    loss_dq = q.new_zeros(())
    for i in range(b):
        pos = scale * dot(q[i], d[i])
        row = [scale * dot(q[i], d[j]) for j in range(b) if q2d_allowed(i, j)]
        if hn is not None:
            row += [scale * dot(q[i], hn[k]) for k in range(hn.shape[0]) if hard_allowed(i, k)]
        loss_qd = loss_qd + w[i] * (logsumexp(row) - pos)
        col = [scale * dot(q[j], d[i]) for j in range(b) if d2q_allowed(i, j)]
        loss_dq = loss_dq + w[i] * (logsumexp(col) - pos)
    loss_qd = loss_qd / total_w
    return (loss_qd + loss_dq / total_w) / 2 if symmetric else loss_qd


# --------------------------------------------------------------------------- random cases
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
    hn_dids: list[int] | None
    temperature: float
    learnable: bool
    symmetric: bool
    same_query: str
    same_doc: str


@st.composite
def cases(draw: st.DrawFn) -> Case:
    b = draw(st.integers(1, 12))
    n_q = draw(st.integers(1, 4))
    n_d = draw(st.integers(1, 5))
    ids = st.lists(st.integers(0, n_q - 1), min_size=b, max_size=b)
    qids = draw(st.none() | ids)
    dids = draw(st.none() | st.lists(st.integers(0, n_d - 1), min_size=b, max_size=b))
    scores = draw(st.lists(st.sampled_from([0.0, 1.0, 2.0, 3.0, 0.5]), min_size=b, max_size=b))
    weights = draw(st.lists(st.sampled_from([0.0, 0.1, 1.0, 2.5, 7.0]), min_size=b, max_size=b))
    if sum(weights) == 0:
        weights[draw(st.integers(0, b - 1))] = 1.0
    n_hard = draw(st.integers(0, 4))
    hn_dids = draw(st.none() | st.lists(st.integers(0, n_d - 1), min_size=n_hard, max_size=n_hard))
    return Case(
        b=b,
        dim=draw(st.integers(2, 6)),
        seed=draw(st.integers(0, 2**31 - 1)),
        qids=qids,
        dids=dids,
        scores=scores,
        weights=weights,
        n_hard=n_hard,
        hn_dids=hn_dids,
        temperature=draw(st.sampled_from([0.05, 0.1, 0.5, 1.0])),
        learnable=draw(st.booleans()),
        symmetric=draw(st.booleans()),
        same_query=draw(st.sampled_from(["mask", "lower", "keep"])),
        same_doc=draw(st.sampled_from(["mask", "keep"])),
    )


def compare_with_reference(c: Case, dtype: torch.dtype, tol: float) -> None:
    loss_fn = GCLLoss(
        temperature=c.temperature,
        learnable_temperature=c.learnable,
        symmetric=c.symmetric,
        same_query=c.same_query,
        same_doc=c.same_doc,
    ).to(dtype)
    q = unit(c.b, c.dim, c.seed, dtype).requires_grad_()
    d = unit(c.b, c.dim, c.seed + 1, dtype).requires_grad_()
    hn = unit(c.n_hard, c.dim, c.seed + 2, dtype).requires_grad_() if c.n_hard else None
    as_long = lambda xs: None if xs is None else torch.tensor(xs, dtype=torch.long)  # noqa: E731
    ours = loss_fn(
        q,
        d,
        torch.tensor(c.weights, dtype=dtype),
        query_ids=as_long(c.qids),
        doc_ids=as_long(c.dids),
        scores=torch.tensor(c.scores, dtype=dtype),
        hard_neg_emb=hn,
        hard_neg_doc_ids=as_long(c.hn_dids) if hn is not None else None,
    )
    assert ours.shape == () and ours.dtype == dtype
    ours.backward()

    # the reference runs in float64 on the very same (possibly float32-rounded) inputs
    q64 = q.detach().double().requires_grad_()
    d64 = d.detach().double().requires_grad_()
    hn64 = hn.detach().double().requires_grad_() if hn is not None else None
    if c.learnable:
        theta = loss_fn.logit_scale.detach().double().requires_grad_()
        scale = theta.exp()
    else:
        scale = torch.tensor(1.0 / c.temperature, dtype=torch.float64)
    ref = ref_loss(
        q64, d64, c.weights, scale,
        qids=c.qids, dids=c.dids, scores=c.scores, hn=hn64,
        hn_dids=c.hn_dids if hn is not None else None,
        same_query=c.same_query, same_doc=c.same_doc, symmetric=c.symmetric,
    )  # fmt: skip
    ref.backward()

    close = dict(rtol=tol, atol=tol)
    grad = lambda t: torch.zeros_like(t) if t.grad is None else t.grad  # noqa: E731  (unused input)
    torch.testing.assert_close(ours.detach().double(), ref.detach(), **close)
    torch.testing.assert_close(q.grad.double(), grad(q64), **close)
    torch.testing.assert_close(d.grad.double(), grad(d64), **close)
    if hn is not None:
        torch.testing.assert_close(hn.grad.double(), grad(hn64), **close)
    if c.learnable:
        torch.testing.assert_close(loss_fn.logit_scale.grad.double(), theta.grad, **close)


@settings(max_examples=80, **HYPO)
@given(c=cases())
def test_matches_naive_reference_float64(c: Case) -> None:
    compare_with_reference(c, torch.float64, 1e-10)


@settings(max_examples=30, **HYPO)
@given(c=cases())
def test_matches_naive_reference_float32(c: Case) -> None:
    compare_with_reference(c, torch.float32, 1e-5)


def test_reference_check_can_fail() -> None:
    """The comparison is sharp: a wrong rule (ours 'keep' vs the reference's 'mask') is caught."""
    q, d, qids = unit(3, 4, 0), unit(3, 4, 1), [0, 0, 1]
    ours = GCLLoss(temperature=0.1, same_query="keep")(q, d, torch.ones(3), query_ids=torch.tensor(qids))
    ref = ref_loss(
        q, d, [1.0, 1.0, 1.0], torch.tensor(10.0, dtype=torch.float64),
        qids=qids, dids=None, scores=None, hn=None, hn_dids=None,
        same_query="mask", same_doc="mask", symmetric=True,
    )  # fmt: skip
    assert not torch.allclose(ours, ref, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------- what it reduces to
def clip_loss(logits: torch.Tensor) -> torch.Tensor:
    labels = torch.arange(logits.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@pytest.mark.parametrize("b", [1, 2, 7, 16])
@pytest.mark.parametrize("same_query", ["mask", "lower", "keep"])
def test_constant_weights_no_duplicates_is_clip(b: int, same_query: str) -> None:
    q, d = unit(b, 8, b), unit(b, 8, b + 100)
    expected = clip_loss(q @ d.T / 0.07)
    loss_fn = GCLLoss(temperature=0.07, same_query=same_query)
    ids = torch.arange(b)
    scores = torch.linspace(0, 1, b, dtype=torch.float64)
    for w in (torch.ones(b), torch.full((b,), 2.5)):
        torch.testing.assert_close(loss_fn(q, d, w, scores=scores), expected, rtol=1e-12, atol=1e-12)
        got = loss_fn(q, d, w, query_ids=ids, doc_ids=ids + 50, scores=scores)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    q32, d32 = q.float(), d.float()
    got32 = GCLLoss(temperature=0.07)(q32, d32, torch.ones(b))
    torch.testing.assert_close(got32, clip_loss(q32 @ d32.T / 0.07), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n_hard", [0, 1, 5])
def test_asymmetric_constant_weights_is_mnrl_formula(n_hard: int) -> None:
    b, scale = 6, 20.0
    q, d, hn = unit(b, 8, 1), unit(b, 8, 2), unit(n_hard, 8, 3)
    candidates = torch.cat([d, hn])
    expected = F.cross_entropy(q @ candidates.T * scale, torch.arange(b))  # MNRL, scale = 1 / T
    loss_fn = GCLLoss(temperature=1 / scale, symmetric=False)
    got = loss_fn(q, d, torch.ones(b), hard_neg_emb=hn if n_hard else None)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # distinct hard-negative doc ids change nothing
    got = loss_fn(q, d, torch.ones(b), doc_ids=torch.arange(b), hard_neg_emb=hn,
                  hard_neg_doc_ids=torch.arange(n_hard) + b)  # fmt: skip
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_matches_sentence_transformers_mnrl() -> None:
    """Cross-check with the library itself: q->d MNRL, and its symmetric per-direction variant."""
    losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
    b, scale = 5, 20.0
    q, d, hn = unit(b, 8, 11), unit(b, 8, 12), unit(b, 8, 13)  # one hard negative per query
    labels = torch.empty(0)
    mnrl = losses.MultipleNegativesRankingLoss(None, scale=scale)
    expected = mnrl.compute_loss_from_embeddings([q, d, hn], labels)
    got = GCLLoss(temperature=1 / scale, symmetric=False)(q, d, torch.ones(b), hard_neg_emb=hn)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    sym = losses.MultipleNegativesRankingLoss(
        None, scale=scale, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"
    )
    expected = sym.compute_loss_from_embeddings([q, d, hn], labels)
    got = GCLLoss(temperature=1 / scale, symmetric=True)(q, d, torch.ones(b), hard_neg_emb=hn)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- weights
def random_batch(seed: int, b: int = 9) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        query_emb=unit(b, 5, seed),
        doc_emb=unit(b, 5, seed + 1),
        weights=torch.rand(b, generator=g, dtype=torch.float64) + 0.1,
        query_ids=torch.randint(0, 3, (b,), generator=g),
        doc_ids=torch.randint(0, 4, (b,), generator=g),
        scores=torch.randint(0, 3, (b,), generator=g).double(),
    )


@pytest.mark.parametrize("same_query", ["mask", "lower", "keep"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_weight_scale_invariance(same_query: str, symmetric: bool) -> None:
    batch = random_batch(0)
    loss_fn = GCLLoss(same_query=same_query, symmetric=symmetric)
    base = loss_fn(**batch)
    for factor in (3.0, 1e-3, 1e4):
        scaled = loss_fn(**{**batch, "weights": batch["weights"] * factor})
        torch.testing.assert_close(scaled, base, rtol=1e-12, atol=1e-12)


def test_zero_weight_row_contributes_nothing() -> None:
    batch = random_batch(1)
    batch["weights"][4] = 0.0
    loss_fn = GCLLoss(symmetric=False, same_query="keep")
    q = batch["query_emb"].clone().requires_grad_()
    loss = loss_fn(**{**batch, "query_emb": q})
    loss.backward()
    # query 4 appears only in its own (zero-weight) q->d term
    assert torch.equal(q.grad[4], torch.zeros(5, dtype=torch.float64))
    assert q.grad[3].abs().sum() > 0
    moved = batch["query_emb"].clone()
    moved[4] = unit(1, 5, 99)[0]
    again = loss_fn(**{**batch, "query_emb": moved})
    torch.testing.assert_close(again, loss.detach(), rtol=1e-12, atol=1e-12)


def test_weighted_mean_of_rows() -> None:
    """Weights are normalised over the batch: loss = sum w_i l_i / sum w_i, l_i from one-hot weights."""
    batch = random_batch(2)
    loss_fn = GCLLoss(same_query="lower")
    b = len(batch["weights"])
    per_row = torch.stack([loss_fn(**{**batch, "weights": one_hot(i, b)}) for i in range(b)])
    w = batch["weights"]
    torch.testing.assert_close(loss_fn(**batch), (w * per_row).sum() / w.sum(), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- masking, by hand
def test_one_query_three_graded_docs() -> None:
    """One query, docs graded 3 > 2 > 1: under "lower" the top doc has 2 negatives, the bottom none."""
    q = unit(1, 6, 5).repeat(3, 1)  # the same query in all three rows
    d = unit(3, 6, 6)
    kw = dict(query_ids=torch.tensor([0, 0, 0]), doc_ids=torch.arange(3), scores=torch.tensor([3.0, 2, 1]))
    L = q @ d.T / 0.05  # noqa: N806
    lower = GCLLoss(same_query="lower", symmetric=False)
    torch.testing.assert_close(lower(q, d, one_hot(0, 3), **kw), torch.logsumexp(L[0], 0) - L[0, 0])
    torch.testing.assert_close(lower(q, d, one_hot(1, 3), **kw), torch.logsumexp(L[1, 1:], 0) - L[1, 1])
    assert lower(q, d, one_hot(2, 3), **kw) == 0.0
    # the sum of the three terms is ListMLE's negative log-likelihood of the order d0 > d1 > d2
    f = L[0]
    list_mle = -sum(f[r] - torch.logsumexp(f[r:], 0) for r in range(3))
    torch.testing.assert_close(lower(q, d, torch.ones(3), **kw) * 3, list_mle)
    # "mask": no negatives at all (both directions); "keep": every row sees all three documents
    assert GCLLoss(same_query="mask")(q, d, torch.ones(3), **kw) == 0.0
    keep = GCLLoss(same_query="keep", symmetric=False)
    torch.testing.assert_close(keep(q, d, one_hot(2, 3), **kw), torch.logsumexp(L[2], 0) - L[2, 2])


def test_ties_and_other_queries_under_lower() -> None:
    """Tied grades do not push each other away; another query's document is always a negative."""
    q = torch.cat([unit(1, 6, 7).repeat(3, 1), unit(1, 6, 8)])
    d = unit(4, 6, 9)
    kw = dict(query_ids=torch.tensor([0, 0, 0, 1]), doc_ids=torch.arange(4), scores=torch.tensor([3.0, 2, 2, 5]))
    L = q @ d.T / 0.05  # noqa: N806
    loss_fn = GCLLoss(same_query="lower", symmetric=False)
    torch.testing.assert_close(loss_fn(q, d, one_hot(1, 4), **kw), torch.logsumexp(L[1, [1, 3]], 0) - L[1, 1])
    torch.testing.assert_close(loss_fn(q, d, one_hot(2, 4), **kw), torch.logsumexp(L[2, [2, 3]], 0) - L[2, 2])
    torch.testing.assert_close(loss_fn(q, d, one_hot(0, 4), **kw), torch.logsumexp(L[0], 0) - L[0, 0])
    # row 3 (query 1, score 5 > all) is unaffected by query 0's grades
    torch.testing.assert_close(loss_fn(q, d, one_hot(3, 4), **kw), torch.logsumexp(L[3], 0) - L[3, 3])


def test_doc_to_query_lower_swaps_roles() -> None:
    """One document judged by three queries (3 > 2 > 1): d->q keeps only lower-scoring queries."""
    q = unit(3, 6, 10)
    d = unit(1, 6, 11).repeat(3, 1)
    kw = dict(query_ids=torch.arange(3), doc_ids=torch.full((3,), 7), scores=torch.tensor([3.0, 2, 1]))
    Lt = (q @ d.T / 0.05).T  # noqa: N806  Lt[i, j] = d_i . q_j / T
    loss_fn = GCLLoss(same_query="lower", symmetric=True)
    # q->d: every other column is the same document (same_doc="mask"), so its terms are 0
    torch.testing.assert_close(loss_fn(q, d, one_hot(0, 3), **kw), (torch.logsumexp(Lt[0], 0) - Lt[0, 0]) / 2)
    expected = (torch.logsumexp(Lt[1, 1:], 0) - Lt[1, 1]) / 2
    torch.testing.assert_close(loss_fn(q, d, one_hot(1, 3), **kw), expected)
    assert loss_fn(q, d, one_hot(2, 3), **kw) == 0.0
    # same_doc="keep": q->d now sees the duplicated document columns
    keep_doc = GCLLoss(same_query="lower", same_doc="keep", symmetric=False)
    L = q @ d.T / 0.05  # noqa: N806
    torch.testing.assert_close(keep_doc(q, d, one_hot(2, 3), **kw), torch.logsumexp(L[2], 0) - L[2, 2])


def test_same_doc_mask_for_hard_negatives() -> None:
    q, d, hn = unit(2, 4, 20), unit(2, 4, 21), unit(2, 4, 22)
    kw = dict(doc_ids=torch.tensor([5, 6]), hard_neg_emb=hn, hard_neg_doc_ids=torch.tensor([5, 9]))
    L = q @ torch.cat([d, hn]).T / 0.05  # noqa: N806  columns: d0, d1, h0 (= doc 5), h1
    loss_fn = GCLLoss(symmetric=False)
    # row 0's positive is doc 5: hard negative h0 (doc 5) is excluded for row 0 only
    expected = torch.logsumexp(L[0, [0, 1, 3]], 0) - L[0, 0]
    torch.testing.assert_close(loss_fn(q, d, one_hot(0, 2), **kw), expected)
    torch.testing.assert_close(loss_fn(q, d, one_hot(1, 2), **kw), torch.logsumexp(L[1], 0) - L[1, 1])
    keep = GCLLoss(symmetric=False, same_doc="keep")
    torch.testing.assert_close(keep(q, d, one_hot(0, 2), **kw), torch.logsumexp(L[0], 0) - L[0, 0])


@settings(max_examples=40, **HYPO)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 12), symmetric=st.booleans())
def test_masking_is_monotone(seed: int, b: int, symmetric: bool) -> None:
    """Candidate sets nest (mask within lower within keep), so each row's term, and the loss, grow."""
    batch = random_batch(seed, b)
    losses = {
        (sq, sd): float(GCLLoss(same_query=sq, same_doc=sd, symmetric=symmetric)(**batch))
        for sq in ("mask", "lower", "keep")
        for sd in ("mask", "keep")
    }
    eps = 1e-12
    for sd in ("mask", "keep"):
        assert losses["mask", sd] <= losses["lower", sd] + eps <= losses["keep", sd] + 2 * eps
    for sq in ("mask", "lower", "keep"):
        assert losses[sq, "mask"] <= losses[sq, "keep"] + eps


# --------------------------------------------------------------------------- temperature
def test_learnable_temperature_init_and_state() -> None:
    loss_fn = GCLLoss(temperature=0.07, learnable_temperature=True)
    assert isinstance(loss_fn.logit_scale, torch.nn.Parameter) and loss_fn.logit_scale.requires_grad
    assert math.isclose(float(loss_fn.logit_scale.detach()), math.log(1 / 0.07), rel_tol=1e-6)
    assert math.isclose(loss_fn.temperature, 0.07, rel_tol=1e-6)
    assert list(loss_fn.state_dict()) == ["logit_scale"]
    assert list(GCLLoss().state_dict()) == [] and GCLLoss().temperature == 0.05


def test_learnable_temperature_is_clamped_and_still_learns() -> None:
    b = 6
    q, d = unit(b, 8, 30), unit(b, 8, 31)
    loss_fn = GCLLoss(temperature=0.05, learnable_temperature=True).double()
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(1000.0))  # e.g. an optimiser overshot
    assert math.isclose(loss_fn.temperature, 0.01)  # reported clamped
    loss = loss_fn(q, d, torch.ones(b))
    assert math.isclose(float(loss_fn.logit_scale.detach()), math.log(100.0))  # clamped in place (CLIP)
    torch.testing.assert_close(loss, GCLLoss(temperature=0.01)(q, d, torch.ones(b)), rtol=1e-12, atol=1e-12)
    loss.backward()
    assert loss_fn.logit_scale.grad is not None and loss_fn.logit_scale.grad != 0  # not stuck at the bound
    # the gradient is d loss / d log-scale: check against a finite difference
    eps = 1e-6
    lo = GCLLoss(temperature=math.exp(-(math.log(100.0) - eps)))(q, d, torch.ones(b))
    hi_scale = GCLLoss(temperature=1.0, learnable_temperature=True, max_logit_scale=1e9).double()
    with torch.no_grad():
        hi_scale.logit_scale.fill_(math.log(100.0) + eps)
    fd = (hi_scale(q, d, torch.ones(b)) - lo) / (2 * eps)
    torch.testing.assert_close(loss_fn.logit_scale.grad, fd.detach(), rtol=1e-5, atol=1e-7)


def test_learnable_temperature_optimiser_step_moves_it() -> None:
    loss_fn = GCLLoss(temperature=0.5, learnable_temperature=True)
    opt = torch.optim.SGD(loss_fn.parameters(), lr=0.1)
    before = float(loss_fn.logit_scale.detach())
    loss_fn(unit(4, 3, 1).float(), unit(4, 3, 1).float(), torch.ones(4)).backward()  # aligned: sharpen
    opt.step()
    assert float(loss_fn.logit_scale.detach()) > before


# --------------------------------------------------------------------------- dtypes and autocast
def test_bfloat16_autocast_computes_in_float32() -> None:
    b = 8
    q, d = unit(b, 16, 40, torch.float32), unit(b, 16, 41, torch.float32)
    loss_fn = GCLLoss(same_query="lower")
    kw = dict(query_ids=torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), scores=torch.arange(8.0) % 3)
    plain = loss_fn(q, d, torch.ones(b), **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = loss_fn(q, d, torch.ones(b), **kw)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain, rtol=0, atol=0)


def test_bfloat16_inputs_give_float32_loss_and_bf16_grads() -> None:
    b = 8
    q = unit(b, 16, 42, torch.bfloat16).requires_grad_()
    d = unit(b, 16, 43, torch.bfloat16).requires_grad_()
    loss = GCLLoss()(q, d, torch.ones(b, dtype=torch.bfloat16))
    assert loss.dtype == torch.float32
    expected = GCLLoss()(q.detach().double(), d.detach().double(), torch.ones(b))
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)
    loss.backward()
    assert q.grad.dtype == torch.bfloat16 and torch.isfinite(q.grad.float()).all()


def test_extreme_logits_are_stable() -> None:
    q = unit(4, 3, 50)
    loss = GCLLoss(temperature=1e-4)(q.float(), q.float(), torch.ones(4))  # logits up to 1e4
    assert torch.isfinite(loss)


# --------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(temperature=0.0), "temperature must be"),
        (dict(temperature=-1.0), "temperature must be"),
        (dict(temperature=float("nan")), "temperature must be"),
        (dict(same_query="lowest"), "same_query must be one of"),
        (dict(same_doc="lower"), "same_doc must be one of"),
        (dict(temperature=0.005, learnable_temperature=True), "max_logit_scale"),
        (dict(learnable_temperature=True, max_logit_scale=0.0), "max_logit_scale must be"),
    ],
)
def test_bad_constructor_args(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GCLLoss(**kwargs)


def test_keyword_only_constructor() -> None:
    with pytest.raises(TypeError):
        GCLLoss(0.05)  # type: ignore[misc]


Q, D = unit(3, 4, 60), unit(3, 4, 61)
W = torch.ones(3)
H = torch.ones(2, 4)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((Q[0], D[0], W[:1]), {}, r"query_emb must be a \(B, D\)"),
        ((Q[:0], D[:0], W[:0]), {}, "empty batch"),
        ((Q, D[:2], W), {}, "doc_emb must have the shape"),
        ((Q, D[:, :3], W), {}, "doc_emb must have the shape"),
        ((Q, D, W[:2]), {}, r"weights must be a \(3,\)"),
        ((Q, D, torch.tensor([1.0, float("nan"), 1.0])), {}, "weights must be finite"),
        ((Q, D, torch.tensor([1.0, float("inf"), 1.0])), {}, "weights must be finite"),
        ((Q, D, torch.tensor([1.0, -0.5, 1.0])), {}, "weights must be >= 0"),
        ((Q, D, torch.zeros(3)), {}, "positive sum"),
        ((Q, D, W), dict(query_ids=torch.arange(2)), r"query_ids must be a \(3,\)"),
        ((Q, D, W), dict(doc_ids=torch.arange(3.0)), "doc_ids must be an integer tensor"),
        ((Q, D, W), dict(scores=torch.ones(4)), r"scores must be a \(3,\)"),
        ((Q, D, W), dict(scores=torch.tensor([1.0, float("nan"), 0.0])), "scores must be finite"),
        ((Q, D, W), dict(hard_neg_emb=torch.ones(2, 5)), r"hard_neg_emb must be an \(N, 4\)"),
        ((Q, D, W), dict(hard_neg_emb=H, hard_neg_doc_ids=torch.arange(3)), "hard_neg_doc_ids"),
        ((Q, D, W), dict(hard_neg_doc_ids=torch.arange(2)), "without hard_neg_emb"),
    ],
)
def test_bad_forward_inputs(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GCLLoss()(*args, **kwargs)


def test_lower_needs_scores() -> None:
    with pytest.raises(ValueError, match="needs scores"):
        GCLLoss(same_query="lower")(Q, D, W, query_ids=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="needs scores"):
        GCLLoss(same_query="lower")(Q, D, W)
