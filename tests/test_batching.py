"""Samplers (determinism, grouping, resumable state), hard negatives and the pre-tokenised batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest_trainer import synthetic_splits, tiny_model

from gcl.data.errors import DataError
from gcl.losses import get_weight_fn
from gcl.training.batching import QueryGroupedSampler, RandomPairSampler, TokenCache, TrainPairs, hard_negative_rows
from gcl.training.checkpoint import _to_safe, sampler_state_from_checkpoint

SAMPLERS = {
    "random": lambda pairs, seed: RandomPairSampler(pairs, 16, seed),
    "query_grouped": lambda pairs, seed: QueryGroupedSampler(pairs, 16, seed, docs_per_query=4),
    "query_grouped_half": lambda pairs, seed: QueryGroupedSampler(pairs, 16, seed, docs_per_query=4, group_fraction=0.5),
}


@pytest.fixture(scope="module")
def pairs() -> TrainPairs:
    train = synthetic_splits().train
    return TrainPairs.from_dataset(train, get_weight_fn("linear")(train.judgments))


def _draw(sampler, n):
    return [sampler.next_batch() for _ in range(n)]


def test_train_pairs_codes_point_at_the_right_texts(pairs):
    train = synthetic_splits().train
    j = train.judgments
    for i in (0, 7, len(j) - 1):
        assert pairs.query_texts[pairs.query_code[i]] == train.queries.loc[j["query_id"].iloc[i], "query"]
        assert pairs.doc_texts[pairs.doc_code[i]] == train.documents.loc[j["doc_id"].iloc[i], "title"]
        assert pairs.score[i] == j["score"].iloc[i]


@pytest.mark.parametrize("kind", list(SAMPLERS))
def test_sampler_is_deterministic_by_seed(pairs, kind):
    a, b, c = (_draw(SAMPLERS[kind](pairs, seed), 60) for seed in (1, 1, 2))  # 60 batches: several epochs
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c))
    for batch in a:
        assert batch.dtype == np.int64 and len(batch) == 16
        assert len(np.unique(batch)) == 16  # no pair twice in a batch


def test_random_sampler_covers_each_pair_once_per_epoch(pairs):
    s = RandomPairSampler(pairs, 16, 0)
    per_epoch = len(pairs) // 16
    epoch = np.concatenate(_draw(s, per_epoch))
    assert len(np.unique(epoch)) == per_epoch * 16


def test_query_grouped_puts_several_docs_of_a_query_in_a_batch(pairs):
    s = QueryGroupedSampler(pairs, 16, 0, docs_per_query=4)
    for batch in _draw(s, 30):
        _, counts = np.unique(pairs.query_code[batch], return_counts=True)
        assert counts.max() >= 2
        assert (counts >= 2).sum() >= 3  # 16 / 4 = 4 groups, one may be lost when the epoch wraps
    # random batches rarely do: the grouped sampler is what gives within-query signal
    r = RandomPairSampler(pairs, 16, 0)
    grouped_random = np.mean([(np.unique(pairs.query_code[b], return_counts=True)[1] >= 2).sum() for b in _draw(r, 30)])
    assert grouped_random < 2


def test_query_grouped_fills_batch_when_queries_have_few_docs():
    """Queries with one judged document each: the batch is still full, rows unique."""
    p = TrainPairs(
        query_code=np.arange(20, dtype=np.int64),
        doc_code=np.arange(20, dtype=np.int64),
        score=np.ones(20),
        weight=np.ones(20),
        query_texts=[f"q{i}" for i in range(20)],
        doc_texts=[f"d{i}" for i in range(20)],
    )
    s = QueryGroupedSampler(p, 8, 0, docs_per_query=4)
    for batch in _draw(s, 10):
        assert len(batch) == 8 and len(np.unique(batch)) == 8


def _equal_groups(n_queries: int = 40, per_query: int = 4) -> TrainPairs:
    """Every query has exactly ``per_query`` judged documents, rows ordered by query."""
    n = n_queries * per_query
    return TrainPairs(query_code=np.repeat(np.arange(n_queries, dtype=np.int64), per_query),
                      doc_code=np.arange(n, dtype=np.int64), score=np.tile(np.arange(per_query, 0, -1.0), n_queries),
                      weight=np.ones(n), query_texts=[f"q{i}" for i in range(n_queries)],
                      doc_texts=[f"d{i}" for i in range(n)])


@pytest.mark.parametrize("fraction, groups", [(1.0, 4), (0.5, 2), (0.25, 1), (0.1, 1), (0.99, 3)])
def test_group_fraction_sets_the_number_of_query_groups(fraction, groups):
    """floor(fraction * 16 / 4) whole groups lead the batch; the rest are pairs of *other* queries."""
    p = _equal_groups()
    s = QueryGroupedSampler(p, 16, 0, docs_per_query=4, group_fraction=fraction)
    for batch in _draw(s, 25):
        assert len(batch) == 16 and len(np.unique(batch)) == 16
        head, tail = batch[: 4 * groups], batch[4 * groups:]
        head_q = p.query_code[head]
        assert [len(np.unique(head_q[i:i + 4])) for i in range(0, len(head), 4)] == [1] * groups  # whole groups
        assert len(np.unique(head_q)) == groups
        assert not set(p.query_code[tail]) & set(head_q)  # the fill never repeats a grouped query


def test_group_fraction_one_is_the_default_sampler(pairs):
    a = _draw(QueryGroupedSampler(pairs, 16, 4, docs_per_query=4), 40)
    b = _draw(QueryGroupedSampler(pairs, 16, 4, docs_per_query=4, group_fraction=1.0), 40)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_group_fraction_fill_is_uniform_over_the_other_pairs():
    """The random part is drawn uniformly: over many batches every pair is about equally frequent."""
    p = _equal_groups(n_queries=50)
    s = QueryGroupedSampler(p, 20, 0, docs_per_query=4, group_fraction=0.2)  # 1 group of 4 + 16 random rows
    counts = np.zeros(len(p))
    for batch in _draw(s, 2000):
        counts[batch[4:]] += 1
    expected = 2000 * 16 / len(p)  # about 160 per pair
    assert abs(counts.mean() - expected) < 1e-9
    assert counts.min() > 0.7 * expected and counts.max() < 1.3 * expected
    # two random rows of one query meet only by chance: the hypergeometric expectation, 16 rows drawn from the
    # 196 pairs of the 49 other queries, is 49 * P(>= 2 of a query's 4 rows drawn)
    from math import comb

    p_two = 1 - sum(comb(4, k) * comb(192, 16 - k) for k in (0, 1)) / comb(196, 16)
    met = np.mean([(np.unique(p.query_code[b[4:]], return_counts=True)[1] >= 2).sum() for b in _draw(s, 2000)])
    assert abs(met - 49 * p_two) < 0.1, (met, 49 * p_two)


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_group_fraction_out_of_range_is_refused(pairs, bad):
    with pytest.raises(ValueError, match="group_fraction must be in"):
        QueryGroupedSampler(pairs, 16, 0, docs_per_query=4, group_fraction=bad)


@pytest.mark.parametrize("kind", list(SAMPLERS))
def test_sampler_state_round_trip_continues_the_exact_sequence(pairs, kind):
    s = SAMPLERS[kind](pairs, 5)
    _draw(s, 37)  # into the second epoch
    state = s.state_dict()
    expected = _draw(s, 50)
    for restore in (state, sampler_state_from_checkpoint(_to_safe(state))):  # in memory and via a checkpoint
        fresh = SAMPLERS[kind](pairs, 999)
        fresh.load_state_dict(restore)
        assert all(np.array_equal(x, y) for x, y in zip(_draw(fresh, 50), expected))


def test_fewer_pairs_than_a_batch_is_a_data_error(pairs):
    small = TrainPairs(pairs.query_code[:5], pairs.doc_code[:5], pairs.score[:5], pairs.weight[:5], pairs.query_texts, pairs.doc_texts)
    for make in (lambda: RandomPairSampler(small, 8, 0), lambda: QueryGroupedSampler(small, 8, 0)):
        with pytest.raises(DataError, match="fewer than one batch of 8"):
            make()


# --------------------------------------------------------------------------- hard negatives
def _naive_candidates(pairs, batch):
    """{query code: rows} of judged pairs scored strictly below all of that query's batch rows, not in the batch."""
    out = {}
    for q in set(pairs.query_code[batch].tolist()):
        floor = min(pairs.score[r] for r in batch if pairs.query_code[r] == q)
        out[q] = {r for r in range(len(pairs)) if pairs.query_code[r] == q and pairs.score[r] < floor and r not in set(batch.tolist())}
    return out


@pytest.mark.parametrize("per_query", [1, 2, 100])
def test_hard_negative_rows_against_a_naive_loop(pairs, per_query):
    s = QueryGroupedSampler(pairs, 16, 3, docs_per_query=2)
    rng = np.random.default_rng(0)
    found_any = False
    for batch in _draw(s, 20):
        hn = hard_negative_rows(pairs, batch, per_query, rng)
        cand = _naive_candidates(pairs, batch)
        assert hn.dtype == np.int64 and len(np.unique(hn)) == len(hn)
        for r in hn:
            q = pairs.query_code[r]
            assert r in cand[q]  # same query, strictly lower score, not in the batch
        for q, rows in cand.items():  # as many as asked for, or all there are
            got = sum(1 for r in hn if pairs.query_code[r] == q)
            assert got == min(per_query, len(rows))
        found_any |= len(hn) > 0
    assert found_any


def test_hard_negative_rows_none_when_disabled(pairs):
    batch = RandomPairSampler(pairs, 16, 0).next_batch()
    assert len(hard_negative_rows(pairs, batch, 0, np.random.default_rng(0))) == 0


def test_hard_negatives_exclude_equal_scores():
    p = TrainPairs(
        query_code=np.array([0, 0, 0, 0, 1], dtype=np.int64),
        doc_code=np.arange(5, dtype=np.int64),
        score=np.array([3.0, 2.0, 2.0, 1.0, 1.0]),
        weight=np.ones(5),
        query_texts=["a", "b"],
        doc_texts=list("vwxyz"),
    )
    hn = hard_negative_rows(p, np.array([1, 4]), 10, np.random.default_rng(0))
    assert hn.tolist() == [3]  # row 2 ties with the batch's 2.0, row 0 is higher, query 1 has nothing lower


# --------------------------------------------------------------------------- tokenised batches
@pytest.fixture(scope="module")
def tower():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_model(0.0)), device="cpu")
    model.max_seq_length = 12
    return model


def test_token_cache_collate_matches_the_towers_tokenisation(tower):
    texts = ["red cotton shirt", "a", "", "acme modern red cotton shirt with a very long title that is truncated here"]
    cache = TokenCache(tower.tokenizer, texts, max_length=12)
    codes = np.array([3, 0, 1, 2, 0])
    got = cache.collate(codes)
    want = tower.tokenize([texts[c] for c in codes])
    assert set(got) == {k for k in want if k in ("input_ids", "attention_mask", "token_type_ids")}
    for key in got:
        assert torch.equal(got[key], want[key]), key
    assert got["input_ids"].shape[1] == 12  # truncated to max_length, padded to the longest row
    short = cache.collate(np.array([0, 1]))
    assert short["input_ids"].shape[1] == int(cache.lengths[[0, 1]].max())  # dynamic padding
    assert (short["input_ids"][1, short["attention_mask"][1] == 0] == cache.pad_id).all()
    with torch.no_grad():  # and the tower embeds them identically
        a = tower({k: v for k, v in got.items()})["sentence_embedding"]
        b = tower(want)["sentence_embedding"]
    assert torch.allclose(a, b, atol=1e-6)


def test_token_cache_chunks_partition_by_length(tower):
    texts = [" ".join(["word"] * n) for n in (1, 9, 3, 7, 5, 2)]
    cache = TokenCache(tower.tokenizer, texts, max_length=12)
    codes = np.array([0, 1, 2, 3, 4, 5, 1])
    chunks = cache.chunks(codes, 3)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(len(codes)))
    lens = [cache.lengths[codes[c]] for c in chunks]
    assert all(a.max() <= b.min() for a, b in zip(lens, lens[1:]))  # length-bucketed
    assert [len(c) for c in cache.chunks(codes, None)] == [7]
    assert [len(c) for c in cache.chunks(codes, 100)] == [7]
