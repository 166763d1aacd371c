"""Training multi-field models: the loss against independent computations, frozen towers,
training on tiny data, identical fusion in training and evaluation, save/load, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest_trainer import assert_states_close, model_state
from multimodal_fixtures import mm_config, product_dir
from test_fusion import naive_fuse

from gcl.data.errors import ConfigError
from gcl.encoders.base import load_model
from gcl.losses import GCLLoss
from gcl.training.multifield import multi_field_loss
from gcl.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)


def test_field_terms_equal_separate_gcl_losses_weighted():
    b = 7
    loss_fn = GCLLoss(temperature=0.1, same_query="lower")
    w = torch.rand(b, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.1
    meta = dict(query_ids=torch.tensor([0, 0, 1, 2, 2, 3, 4]), doc_ids=torch.tensor([0, 1, 2, 3, 4, 5, 5]),
                scores=torch.tensor([3.0, 1.0, 2.0, 2.0, 2.0, 1.0, 3.0]))
    qf, df, q1, d1, q2, d2 = (unit(b, 5, s) for s in range(6))
    p1 = torch.tensor([1, 1, 0, 1, 1, 1, 0], dtype=torch.float64)  # rows without the field
    q1, d1 = q1 * p1[:, None], d1 * p1[:, None]
    p2 = torch.ones(b, dtype=torch.float64)
    hn = unit(3, 5, 9)
    got = multi_field_loss(loss_fn, qf, df, w, fused_weight=0.7, field_terms=[(0.5, q1, d1, p1), (0.25, q2, d2, p2)],
                           hard_neg_emb=hn, hard_neg_doc_ids=torch.tensor([7, 8, 9]), **meta)
    want = (0.7 * loss_fn(qf, df, w, hard_neg_emb=hn, hard_neg_doc_ids=torch.tensor([7, 8, 9]), **meta)
            + 0.5 * loss_fn(q1, d1, w * p1, **meta) + 0.25 * loss_fn(q2, d2, w, **meta))
    assert torch.allclose(got, want, atol=1e-12)
    # fused term off, and a term whose pairs all lack the field is skipped (not NaN)
    only = multi_field_loss(loss_fn, qf, df, w, fused_weight=0.0, field_terms=[(1.0, q2, d2, p2), (1.0, q1, d1, 0 * p1)],
                            **meta)
    assert torch.allclose(only, loss_fn(q2, d2, w, **meta), atol=1e-12)


def _batch_loss_by_hand(tr: Trainer, rows: np.ndarray, pair_terms=()) -> torch.Tensor:
    """The step's loss recomputed independently: the model's inference encoders per field, the
    naive per-item fusion loop of test_fusion, then the GCL loss on the fused embeddings."""
    p, m = tr.pairs, tr.model
    train = tr.splits.train
    import pandas as pd

    q_ids = pd.factorize(train.judgments["query_id"])[1][p.query_code[rows]]
    d_ids = pd.factorize(train.judgments["doc_id"])[1][p.doc_code[rows]]
    queries, docs = train.queries.loc[q_ids], train.documents.loc[d_ids]
    qe, qp = m.encode_fields(queries, m.query_fields)
    de, dp = m.encode_fields(docs, m.doc_fields)
    fuse_naive = lambda e, pr, fields: naive_fuse([torch.from_numpy(x).double() for x in e], [f.weight for f in fields],
                                                   [x.tolist() for x in pr])
    q, d = fuse_naive(qe, qp, m.query_fields), fuse_naive(de, dp, m.doc_fields)
    meta = dict(query_ids=torch.as_tensor(p.query_code[rows]), doc_ids=torch.as_tensor(p.doc_code[rows]),
                scores=torch.as_tensor(p.score[rows]))
    w = torch.as_tensor(p.weight[rows])
    loss = tr.loss_fn(q, d, w, **meta)
    for lam, a, b in pair_terms:
        both = torch.from_numpy(qp[a] & dp[b]).double()
        loss = loss + lam * tr.loss_fn(torch.from_numpy(qe[a]).double(), torch.from_numpy(de[b]).double(), w * both, **meta)
    return loss


@pytest.mark.parametrize("pairs", [False, True])
def test_step_loss_equals_an_independent_computation(tmp_path, pairs):
    extra = {"loss.field_pairs": [{"query": "query", "doc": "title", "weight": 0.5},
                                  {"query": "query", "doc": "image_local", "weight": 0.3}]} if pairs else {}
    tr = Trainer(mm_config(tmp_path, **extra))  # frozen image tower, dropout 0: deterministic forward
    rows = tr.sampler.next_batch()
    want = _batch_loss_by_hand(tr, rows, [(0.5, 0, 1), (0.3, 0, 0)] if pairs else [])
    tr.model.train()
    got = tr._micro_step(rows, 1.0)
    assert abs(got - float(want)) < 1e-4, (got, float(want))


def test_frozen_image_tower_gets_no_gradient_and_does_not_change(tmp_path):
    tr = Trainer(mm_config(tmp_path))
    image = tr.model.towers["image"].image
    before = {k: v.clone() for k, v in image.backbone.state_dict().items()}
    proj = image.projection.weight.detach().clone()
    tr.train_step()
    assert all(p.grad is None for p in image.backbone.parameters())
    assert image.projection.weight.grad is not None and image.projection.weight.grad.abs().sum() > 0
    tr.train_step()
    for k, v in image.backbone.state_dict().items():  # weights and BatchNorm statistics
        assert torch.equal(v, before[k]), k
    assert not torch.equal(image.projection.weight, proj)
    assert tr.encoding.d_inputs.inputs[0].features is not None  # features were pre-computed once


def test_unfrozen_image_tower_trains_its_backbone(tmp_path):
    tr = Trainer(mm_config(tmp_path, freeze_image=False))
    tr.train_step()
    grads = [p.grad for p in tr.model.towers["image"].image.backbone.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert tr.encoding.d_inputs.stats.loaded > 0 and tr.encoding.d_inputs.stats.missing == 0


def _fixed_loss(tr: Trainer, rows: np.ndarray) -> float:
    tr.model.eval()
    with torch.no_grad():
        q = tr.model.fuse_side("query", *tr.encoding.q_inputs.embed(tr.pairs.query_code[rows], tr.autocast))
        d = tr.model.fuse_side("doc", *tr.encoding.d_inputs.embed(tr.pairs.doc_code[rows], tr.autocast))
        return float(tr.loss_fn(q, d, torch.as_tensor(tr.pairs.weight[rows]),
                                query_ids=torch.as_tensor(tr.pairs.query_code[rows]),
                                doc_ids=torch.as_tensor(tr.pairs.doc_code[rows])))


def test_multimodal_model_trains_loss_falls_and_save_load_is_identical(tmp_path):
    tr = Trainer(mm_config(tmp_path, optim__steps=25, optim__lr=3e-3))
    rows = np.arange(min(64, len(tr.pairs)))
    start = _fixed_loss(tr, rows)
    tr.fit()
    end = _fixed_loss(tr, rows)
    assert end < start - 0.1, (start, end)
    # identical fusion in training and evaluation: the training path equals encode_documents
    train = tr.splits.train
    import pandas as pd

    d_ids = pd.factorize(train.judgments["doc_id"])[1][:10]
    via_training = tr.model.fuse_side("doc", *tr.encoding.d_inputs.embed(np.arange(10), tr.autocast)).detach().numpy()
    via_eval = tr.model.encode_documents(train.documents.loc[d_ids])
    np.testing.assert_allclose(via_training, via_eval, atol=1e-5)
    loaded = load_model(tmp_path / "final")
    assert loaded.config.image_root == str(product_dir().resolve())
    np.testing.assert_array_equal(loaded.encode_documents(train.documents.loc[d_ids]), via_eval)
    np.testing.assert_array_equal(loaded.encode_queries(train.queries.iloc[:5]), tr.model.encode_queries(train.queries.iloc[:5]))


def test_resume_is_exact(tmp_path):
    a = Trainer(mm_config(tmp_path / "a", optim__steps=4, checkpoint_every=2))
    a.fit()
    b = Trainer(mm_config(tmp_path / "b", optim__steps=4, checkpoint_every=2))
    b.fit(stop_after=2)
    c = Trainer(mm_config(tmp_path / "b", optim__steps=4, checkpoint_every=2))
    c.fit(resume=True)
    assert_states_close(model_state(a), model_state(c))


@pytest.mark.parametrize("override, message", [
    ({"loss.field_pairs": [{"query": "query", "doc": "colour"}]}, "not \\(query field, document field\\)"),
    ({"batch.grad_cache_chunk": 4}, "grad_cache_chunk"),
])
def test_unsupported_or_wrong_options_are_config_errors(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(mm_config(tmp_path, **override))


def test_field_pairs_need_a_multifield_model(tmp_path):
    from conftest_trainer import make_config

    with pytest.raises(ConfigError, match="multi-field"):
        make_config(tmp_path, loss__field_pairs=[{"query": "query", "doc": "title"}])


def test_a_corrupt_training_image_is_counted_and_skipped(tmp_path):
    import shutil

    src = tmp_path / "data"
    shutil.copytree(product_dir(), src)
    import pandas as pd

    used = pd.read_csv(src / "train.csv")["image_local"].drop_duplicates().tolist()
    (src / used[0]).write_bytes(b"garbage")
    (src / used[1]).unlink()
    with pytest.warns(UserWarning, match="1 missing and 1 corrupt"):
        tr = Trainer(mm_config(tmp_path / "run", data__source=str(src)))
    tr.train_step()  # no crash; those documents fall back to their titles


def test_dev_evaluation_and_keep_best_with_a_multifield_model(tmp_path):
    tr = Trainer(mm_config(tmp_path, optim__steps=2, eval__every=2, eval__dev_corpus_size=40))
    result = tr.fit()
    assert result.best_step == 2 and 0.0 <= result.best_metric <= 1.0
    assert isinstance(load_model(tmp_path / "best"), type(tr.model))


def test_hard_negatives_enter_the_fused_term(tmp_path):
    tr = Trainer(mm_config(tmp_path, loss__hard_negatives=2, batch__sampler="query_grouped", batch__docs_per_query=1, optim__steps=6))
    seen = {}
    original = tr.loss_fn.forward

    def spy(q, d, w, **meta):
        seen.setdefault("calls", []).append(meta.get("hard_neg_emb"))
        return original(q, d, w, **meta)

    tr.loss_fn.forward = spy
    for _ in range(5):
        tr.train_step()
    found = [h for h in seen["calls"] if h is not None]
    assert found, "no batch had a lower-scored judged document to use"
    hn = found[0]
    assert hn is not None and hn.shape[1] == tr.model.dim and not hn.requires_grad
    assert torch.allclose(hn.norm(dim=1), torch.ones(len(hn)), atol=1e-5)
