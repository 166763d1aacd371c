"""Model-mined negatives: never a judged document of the query, skip the top, refresh on schedule."""

from __future__ import annotations

import numpy as np
import pytest
from conftest_trainer import make_config, synthetic_splits

from gcl.evaluation.search import exact_search
from gcl.training.mining import NegativeMiner
from gcl.training.trainer import Trainer


@pytest.fixture(scope="module")
def trainer():
    return Trainer(make_config("unused", loss__mined_negatives=3, loss__mine_depth=6, loss__mine_skip=2),
                   splits=synthetic_splits())


def test_mined_pool_is_the_models_top_minus_judged(trainer):
    p, miner = trainer.pairs, trainer.miner
    miner.maybe_refresh(trainer.model, step=0)
    trainer.model.eval()
    docs = trainer.model.encode_texts(p.doc_texts)
    queries = trainer.model.encode_texts(p.query_texts)
    _, idx = exact_search(queries, docs, 8)
    for q in range(0, len(p.query_texts), 7):
        judged = set(p.doc_code[p.query_code == q].tolist())
        expected = [d for d in idx[q, 2:].tolist() if d not in judged]
        assert miner._pool[q].tolist() == expected
        assert not judged & set(miner._pool[q].tolist())


def test_sample_draws_only_from_batch_queries(trainer):
    miner = trainer.miner
    miner.maybe_refresh(trainer.model, step=0)
    qs = np.array([0, 0, 5])
    out = miner.sample(qs, 2, np.random.default_rng(0))
    allowed = set(miner._pool[0].tolist()) | set(miner._pool[5].tolist())
    assert set(out.tolist()) <= allowed and len(out) <= 4


def test_refresh_schedule(trainer):
    miner = NegativeMiner(trainer.pairs, depth=3, skip=0, refresh=5)
    miner.maybe_refresh(trainer.model, step=0)
    assert miner.last_refresh == 0
    miner.maybe_refresh(trainer.model, step=4)
    assert miner.last_refresh == 0
    miner.maybe_refresh(trainer.model, step=5)
    assert miner.last_refresh == 5


def test_state_round_trip(trainer):
    miner = trainer.miner
    miner.maybe_refresh(trainer.model, step=0)
    other = NegativeMiner(trainer.pairs, depth=6, skip=2, refresh=100)
    other.load_state_dict(miner.state_dict())
    assert other.last_refresh == miner.last_refresh
    assert all(np.array_equal(other._pool[q], v) for q, v in miner._pool.items())


def test_training_with_mined_negatives_runs(trainer):
    loss = trainer.train_step()
    assert np.isfinite(loss)
