"""The thresholded binary baseline: loss.positive_threshold keeps only pairs with score >= T."""

from __future__ import annotations

import numpy as np
import pytest
from conftest_trainer import make_config, synthetic_splits

from gcl.config import load_config
from gcl.data.errors import DataError
from gcl.training.batching import keep_positives
from gcl.training.config import TrainConfig
from gcl.training.trainer import Trainer

THRESHOLD = 2.0


def test_keep_positives_drops_every_pair_below_the_threshold():
    train = synthetic_splits().train
    kept = keep_positives(train, THRESHOLD)
    scores = train.judgments["score"].to_numpy()
    assert (scores < THRESHOLD).any() and (scores >= THRESHOLD).any()  # the test means something
    assert kept.judgments["score"].min() >= THRESHOLD
    assert len(kept.judgments) == int((scores >= THRESHOLD).sum())
    assert set(kept.queries.index) == set(kept.judgments["query_id"])  # queries left without a pair go
    assert len(kept.documents) == len(train.documents)  # the corpus stays whole
    assert keep_positives(train, None) is train
    with pytest.raises(DataError, match="no training pair has score >= 9"):
        keep_positives(train, 9.0)


def test_trainer_never_draws_a_pair_below_the_threshold(tmp_path):
    cfg = make_config(tmp_path, loss__weight_fn="constant", loss__positive_threshold=THRESHOLD,
                      batch__sampler="query_grouped", batch__docs_per_query=2)
    trainer = Trainer(cfg, splits=synthetic_splits())
    assert trainer.pairs.score.min() >= THRESHOLD
    low = {(q, d) for q, d, s in synthetic_splits().train.judgments.itertuples(index=False) if s < THRESHOLD}
    drawn = set()
    for _ in range(200):  # several epochs of the sampler
        rows = trainer.sampler.next_batch()
        drawn.update(zip((trainer.pairs.query_texts[c] for c in trainer.pairs.query_code[rows]),
                         (trainer.pairs.doc_texts[c] for c in trainer.pairs.doc_code[rows])))
    train = synthetic_splits().train
    low_texts = {(train.queries.loc[q, "query"], train.documents.loc[d, "title"]) for q, d in low}
    high_texts = {(train.queries.loc[q, "query"], train.documents.loc[d, "title"])
                  for q, d, s in train.judgments.itertuples(index=False) if s >= THRESHOLD}
    assert drawn and not (drawn & (low_texts - high_texts))
    unthresholded = Trainer(make_config(tmp_path / "all", loss__weight_fn="constant"), splits=synthetic_splits())
    assert unthresholded.pairs.score.min() < THRESHOLD  # without the option the low pairs are trained on
    assert len(trainer.pairs) < len(unthresholded.pairs)


def test_named_config_is_the_binary_baseline_with_a_threshold():
    binary = load_config(TrainConfig, "configs/homedepot_binary.yaml")
    fair = load_config(TrainConfig, "configs/homedepot_binary_thresholded.yaml")
    assert fair.loss.weight_fn == "constant" and fair.loss.positive_threshold == 2.0
    assert binary.loss.positive_threshold is None
    assert (fair.batch, fair.optim, fair.model, fair.data) == (binary.batch, binary.optim, binary.model, binary.data)
    assert np.isclose(fair.loss.temperature, binary.loss.temperature)
