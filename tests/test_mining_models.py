"""Mined negatives through the model protocol: a multi-field (text + image) model mines from its
fused query and document embeddings, and a training step uses them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from multimodal_fixtures import mm_config

from gcl.evaluation.search import exact_search
from gcl.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_multifield_model_mines_from_its_fused_embeddings(tmp_path):
    tr = Trainer(mm_config(tmp_path, loss__mined_negatives=2, loss__mine_depth=5, loss__mine_skip=1,
                           optim__steps=2))
    p, miner, model = tr.pairs, tr.miner, tr.model
    miner.maybe_refresh(model, step=0)
    train = tr.splits.train
    q_ids = pd.factorize(train.judgments["query_id"])[1]
    d_ids = pd.factorize(train.judgments["doc_id"])[1]
    model.eval()
    queries = model.encode_queries(train.queries.loc[q_ids])
    docs = model.encode_documents(train.documents.loc[d_ids])  # image + title, fused
    _, idx = exact_search(queries, docs, 6)
    for q in range(len(q_ids)):
        judged = set(p.doc_code[p.query_code == q].tolist())
        assert miner._pool[q].tolist() == [d for d in idx[q, 1:].tolist() if d not in judged]
    assert any(len(v) for v in miner._pool.values())
    batch_negatives = miner.sample(p.query_code[tr.sampler.next_batch()], 2, np.random.default_rng(0))
    assert len(batch_negatives) > 0  # what the multi-field micro-step adds to its fixed negatives
    assert tr.fit().steps == 2
