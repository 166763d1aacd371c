"""gcl.sentence_transformers: GCLLoss / CachedGCLLoss / GCLBatchSampler inside SentenceTransformerTrainer.

The loss is checked against gcl's own GCLLoss with gcl's whole-table weights (float64, gradients
of every parameter), against sentence-transformers' MultipleNegativesRankingLoss (constant
weights, one-way and symmetric), GradCache against the plain loss; the sampler against gcl's
QueryGroupedSampler; a short training run lowers the loss; bad datasets name their column; the
saved model card names the loss and its parameters.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("datasets")
pytest.importorskip("accelerate")

from conftest_trainer import tiny_model  # noqa: E402
from datasets import Dataset  # noqa: E402
from sentence_transformers import (  # noqa: E402
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss  # noqa: E402

from gcl.errors import DataError  # noqa: E402
from gcl.losses import get_weight_fn  # noqa: E402
from gcl.losses.gcl_loss import GCLLoss as CoreGCLLoss  # noqa: E402
from gcl.sentence_transformers import (  # noqa: E402
    CachedGCLLoss,
    GCLBatchSampler,
    GCLLoss,
    check_dataset,
    to_st_dataset,
)
from gcl.training.batching import QueryGroupedSampler  # noqa: E402

SCORES = (3.0, 2.0, 1.0, 1.0, 0.0)  # tied grades on purpose


def graded_rows(n_queries: int = 8, *, shared_doc: bool = True) -> dict[str, list]:
    """``n_queries`` queries with 5 graded documents each. With ``shared_doc``, query 1's lowest
    document has the text of query 0's top document (one document judged for two queries)."""
    rows: dict[str, list] = {"query": [], "document": [], "score": []}
    for q in range(n_queries):
        for k, s in enumerate(SCORES):
            rows["query"].append(f"query {q}")
            rows["document"].append("document 0 0" if (shared_doc and (q, k) == (1, 4)) else f"document {q} {k}")
            rows["score"].append(s)
    return rows


def st_model(dtype=torch.float64) -> SentenceTransformer:
    return SentenceTransformer(str(tiny_model(0.0)), device="cpu").to(dtype)


def make_trainer(model, ds, loss, tmp_path, **args) -> SentenceTransformerTrainer:
    base = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=10, batch_sampler=GCLBatchSampler,
                report_to=[], save_strategy="no", seed=0, use_cpu=True, dataloader_num_workers=0)
    base.update(args)
    return SentenceTransformerTrainer(model=model, args=SentenceTransformerTrainingArguments(**base),
                                      train_dataset=ds, loss=loss)


def first_batch(trainer, ds) -> tuple[list[int], dict]:
    sampler = trainer.get_batch_sampler(ds, batch_size=10, drop_last=False, valid_label_columns=["label", "score"],
                                        seed=0)
    rows = next(iter(sampler))
    return rows, trainer.data_collator([ds[i] for i in rows])


def param_grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def embed(model, texts: list[str]) -> torch.Tensor:
    return F.normalize(model(model.tokenize(texts))["sentence_embedding"], dim=-1)


# --------------------------------------------------------------------------- loss == gcl's loss
@pytest.mark.parametrize("same_query,symmetric,weight_fn", [("lower", True, "linear"), ("mask", False, "power")])
def test_trainer_loss_and_grads_equal_gcl_loss(tmp_path, same_query, symmetric, weight_fn):
    rows = graded_rows()
    ds = Dataset.from_dict(rows)
    model = st_model()
    loss = GCLLoss(model, weight_fn=weight_fn, same_query=same_query, symmetric=symmetric, temperature=0.07,
                   score_range=(min(rows["score"]), max(rows["score"])))
    trainer = make_trainer(model, ds, loss, tmp_path)
    batch_rows, inputs = first_batch(trainer, ds)

    value = trainer.compute_loss(model, inputs)
    value.backward()
    got = param_grads(model)
    model.zero_grad(set_to_none=True)

    # Reference: gcl's GCLLoss on the same embeddings, weights over the WHOLE table as gcl train does.
    table = pd.DataFrame({"query_id": rows["query"], "doc_id": rows["document"], "score": rows["score"]})
    w_all = get_weight_fn(weight_fn)(table)
    qid = torch.as_tensor(pd.factorize(pd.Series(rows["query"]))[0][batch_rows])
    did = torch.as_tensor(pd.factorize(pd.Series(rows["document"]))[0][batch_rows])
    q = embed(model, [rows["query"][i] for i in batch_rows])
    d = embed(model, [rows["document"][i] for i in batch_rows])
    core = CoreGCLLoss(temperature=0.07, same_query=same_query, symmetric=symmetric)
    ref = core(q, d, torch.as_tensor(w_all[batch_rows]), query_ids=qid, doc_ids=did,
               scores=torch.as_tensor(table.score.to_numpy()[batch_rows]))
    ref.backward()
    want = param_grads(model)

    assert value.dtype == torch.float64
    assert abs(value.item() - ref.item()) < 1e-12
    assert got.keys() == want.keys() and len(got) > 10
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-12, msg=name)


def test_batch_has_graded_documents_of_a_query_and_a_shared_document_is_masked(tmp_path):
    """The shared document text gets one doc id (masked, not a negative); ids from token identity."""
    ds = Dataset.from_dict(graded_rows())
    model = st_model()
    loss = GCLLoss(model, same_query="lower")
    features = [model.tokenize(["q a", "q a", "q b"]), model.tokenize(["d x", "d y", "d x"])]
    batch = loss._batch(features, torch.tensor([2.0, 1.0, 0.0]))
    assert batch.query_ids.tolist()[0] == batch.query_ids.tolist()[1] != batch.query_ids.tolist()[2]
    assert batch.doc_ids.tolist()[0] == batch.doc_ids.tolist()[2] != batch.doc_ids.tolist()[1]
    rows, _ = first_batch(make_trainer(model, ds, loss, tmp_path), ds)
    queries = pd.Series([ds[i]["query"] for i in rows])
    assert queries.value_counts().max() >= 2  # several graded documents of one query


def test_explicit_query_ids_in_the_label(tmp_path):
    """label = [score, query_id]: two texts with one id are one query (masked), unlike text identity."""
    model = st_model()
    loss = GCLLoss(model, weight_fn="constant", same_query="mask", symmetric=False)
    features = [model.tokenize(["red drill", "drill red", "hammer"]), model.tokenize(["d1", "d2", "d3"])]
    with torch.no_grad():
        by_text = loss(features, torch.tensor([1.0, 1.0, 1.0]))
        by_id = loss(features, torch.tensor([[1.0, 5.0], [1.0, 5.0], [1.0, 6.0]]))
        q, d = embed(model, ["red drill", "drill red", "hammer"]), embed(model, ["d1", "d2", "d3"])
        ref = CoreGCLLoss(same_query="mask", symmetric=False)(q, d, torch.ones(3), query_ids=torch.tensor([5, 5, 6]))
    assert abs(by_id.item() - ref.item()) < 1e-12
    assert by_id.item() < by_text.item()  # a masked false negative lowers the loss
    # Through the trainer's collator: the label column of pairs arrives as a (B, 2) tensor.
    ds = Dataset.from_dict({"query": ["red drill", "drill red", "hammer"], "document": ["d1", "d2", "d3"],
                            "label": [[1.0, 5.0], [1.0, 5.0], [1.0, 6.0]]})
    trainer = make_trainer(model, ds, loss, tmp_path, batch_sampler="batch_sampler")
    with torch.no_grad():
        via_trainer = trainer.compute_loss(model, trainer.data_collator([ds[i] for i in range(3)]))
    assert abs(via_trainer.item() - ref.item()) < 1e-12


@pytest.mark.parametrize("name", ["linear", "power", "exponential", "constant"])
def test_score_range_gives_the_whole_table_weights(name):
    """A batch whose scores span less than the table: with score_range its weights are gcl train's
    (the weight function over the whole table), without it the batch's own min-max."""
    from gcl.sentence_transformers import _Batch

    table = pd.DataFrame({"query_id": [0, 0, 1, 1, 2, 2], "doc_id": [0, 1, 2, 3, 4, 5],
                          "score": [0.0, 2.0, 2.5, 1.0, 10.0, 4.0]})
    rows = [1, 2, 3, 5]
    batch = _Batch(scores=torch.tensor(table.score.to_numpy()[rows], dtype=torch.float32),
                   query_ids=torch.tensor([0, 1, 1, 2]), doc_ids=torch.tensor([1, 2, 3, 5]))
    whole = get_weight_fn(name)(table)[rows]
    own = get_weight_fn(name)(table.iloc[rows])
    model = st_model(torch.float32)
    np.testing.assert_allclose(GCLLoss(model, weight_fn=name, score_range=(0, 10)).batch_weights(batch).numpy(),
                               whole, rtol=1e-12)
    np.testing.assert_allclose(GCLLoss(model, weight_fn=name).batch_weights(batch).numpy(), own, rtol=1e-12)
    rr = GCLLoss(model, weight_fn="reciprocal_rank", score_range=(0, 10)).batch_weights(batch).numpy()
    np.testing.assert_allclose(rr, [1.0, 1.0, 0.5, 1.0])  # ranks among the batch's documents of a query


# --------------------------------------------------------------------------- reductions to MNRL
@pytest.mark.parametrize("symmetric", [False, True])
def test_constant_weights_equal_multiple_negatives_ranking_loss(tmp_path, symmetric):
    rows = {"query": [f"query {i}" for i in range(10)], "document": [f"document {i}" for i in range(10)],
            "score": [float(i % 3) for i in range(10)]}
    ds = Dataset.from_dict(rows)
    model = st_model()
    gcl = GCLLoss(model, weight_fn="constant", temperature=0.05, symmetric=symmetric)
    directions = ("query_to_doc", "doc_to_query") if symmetric else ("query_to_doc",)
    mnrl = MultipleNegativesRankingLoss(model, scale=20.0, directions=directions, partition_mode="per_direction")
    trainer = make_trainer(model, ds, gcl, tmp_path, batch_sampler="batch_sampler")
    inputs = trainer.data_collator([ds[i] for i in range(10)])
    features, labels = trainer.collect_features(inputs)

    a = gcl(features, labels)
    a.backward()
    ga = param_grads(model)
    model.zero_grad(set_to_none=True)
    b = mnrl(features, labels)
    b.backward()
    gb = param_grads(model)
    assert abs(a.item() - b.item()) < 1e-12
    for name in gb:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-10, atol=1e-12, msg=name)


def test_cached_loss_equals_plain_loss(tmp_path):
    rows = graded_rows()
    ds = Dataset.from_dict(rows)
    model = st_model()
    kw = dict(weight_fn="linear", same_query="lower", score_range=(0.0, 3.0))
    plain, cached = GCLLoss(model, **kw), CachedGCLLoss(model, mini_batch_size=3, **kw)
    trainer = make_trainer(model, ds, plain, tmp_path)
    _, inputs = first_batch(trainer, ds)
    features, labels = trainer.collect_features(inputs)

    a = plain(features, labels)
    a.backward()
    ga = param_grads(model)
    model.zero_grad(set_to_none=True)
    b = cached(features, labels)
    b.backward()
    gb = param_grads(model)
    assert abs(a.item() - b.item()) < 1e-12
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-9, atol=1e-12, msg=name)
    assert cached.get_config_dict()["mini_batch_size"] == 3


# --------------------------------------------------------------------------- sampler
def test_sampler_is_gcl_query_grouped_sampler_and_deterministic():
    ds = Dataset.from_dict(graded_rows(12, shared_doc=False))
    make = functools.partial(GCLBatchSampler, ds, batch_size=10, drop_last=False, valid_label_columns=["score"])
    s = make(seed=3)
    batches = list(s)
    assert len(batches) == len(s) == 6 and all(len(b) == 10 for b in batches)
    assert batches == list(make(seed=3))  # same seed, same batches
    assert batches != list(make(seed=4))
    ref = QueryGroupedSampler(s.pairs, 10, 3, 4)  # no duplicates here: exactly gcl's batches
    assert batches == [ref.next_batch().tolist() for _ in batches]
    s.set_epoch(1)
    assert list(s) != batches and list(s) == list(s)
    half = make(seed=3, group_fraction=0.5)  # the share of query groups reaches gcl's sampler
    ref = QueryGroupedSampler(s.pairs, 10, 3, 4, group_fraction=0.5)
    assert list(half) == [ref.next_batch().tolist() for _ in range(len(half))] != batches


def test_sampler_drops_duplicate_texts():
    rows = graded_rows(6)
    # a query text standing for two query ids, and many documents shared between queries
    rows["label"] = [[s, float(i // 5)] for i, s in enumerate(rows.pop("score"))]
    rows["query"][12] = "query 0"  # row 12 (query id 2) reuses query 0's text
    rows["document"] = [f"doc {i % 12}" for i in range(len(rows["query"]))]
    ds = Dataset.from_dict(rows)
    layout = check_dataset(ds)
    assert layout.query_ids and layout.label == "label"
    for seed in range(5):
        for batch in GCLBatchSampler(ds, batch_size=8, drop_last=False, seed=seed, docs_per_query=2):
            docs = [ds[i]["document"] for i in batch]
            assert len(batch) == 8 and len(set(docs)) == 8
            owner = {}
            for i in batch:
                assert owner.setdefault(ds[i]["query"], ds[i]["label"][1]) == ds[i]["label"][1]


def test_sampler_cannot_fill_without_duplicates():
    ds = Dataset.from_dict({"query": [f"q{i}" for i in range(8)], "document": ["same"] * 4 + ["other"] * 4,
                            "score": [1.0] * 8})
    with pytest.raises(DataError, match="repeating a document") as err:
        list(GCLBatchSampler(ds, batch_size=4, drop_last=False))
    assert err.value.field == "document"


# --------------------------------------------------------------------------- training
def test_a_few_trainer_steps_with_the_sampler_lower_the_loss(tmp_path):
    rows = graded_rows(16, shared_doc=False)
    ds = Dataset.from_dict(rows)
    model = st_model(torch.float32)
    loss = GCLLoss(model, weight_fn="linear", same_query="lower", temperature=0.05, score_range=(0.0, 3.0))
    trainer = make_trainer(model, ds, loss, tmp_path, max_steps=12, learning_rate=2e-3, warmup_steps=0,
                           logging_steps=4)
    probe = trainer.data_collator([ds[i] for i in range(0, 40)])

    def probe_loss() -> float:
        with torch.no_grad():
            return trainer.compute_loss(model, dict(probe)).item()

    before = probe_loss()
    trainer.train()
    after = probe_loss()
    assert after < before - 0.05, (before, after)
    # Saving through sentence-transformers: a normal model directory whose card names the loss.
    out = tmp_path / "saved"
    model.save(str(out))
    card = (out / "README.md").read_text()
    assert "gcl.sentence_transformers.GCLLoss" in card and '"same_query": "lower"' in card
    assert '"weight_fn": "linear"' in card and "2404.08535" in card
    reloaded = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_allclose(reloaded.encode(["query 1"]), model.encode(["query 1"]), atol=1e-6)


def test_to_st_dataset_from_a_graded_dataset(tiny_dataset):
    ds = to_st_dataset(tiny_dataset)
    assert ds.column_names == ["query", "document", "score"] and len(ds) == len(tiny_dataset.judgments)
    np.testing.assert_array_equal(ds["score"], tiny_dataset.judgments.score.to_numpy())
    with_ids = to_st_dataset(tiny_dataset, query_ids=True)
    assert with_ids.column_names == ["query", "document", "label"] and check_dataset(with_ids).query_ids
    codes = pd.factorize(tiny_dataset.judgments.query_id)[0]
    np.testing.assert_array_equal(np.asarray(with_ids["label"])[:, 1], codes)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("columns,field,match", [
    ({"query": ["a", "b"], "document": ["x", "y"]}, "score", "'score'"),
    ({"query": ["a", "b"], "document": ["x", "y"], "title": ["t", "u"], "score": [1.0, 2.0]}, "title", "2 text columns"),
    ({"query": ["a", "b"], "document": ["x", "y"], "query_id": [1, 2], "score": [1.0, 2.0]}, "query_id", "not text"),
    ({"query": ["a", "b"], "document": ["x", "y"], "score": [1.0, float("nan")]}, "score", "non-finite"),
    ({"query": ["a", "b"], "document": ["x", "y"], "label": [[1.0, 0.5], [2.0, 1.0]]}, "label", "integers"),
])
def test_bad_columns_name_the_column(columns, field, match):
    ds = Dataset.from_dict(columns)
    with pytest.raises(DataError, match=match) as err:
        GCLBatchSampler(ds, batch_size=2, drop_last=False, valid_label_columns=["label", "score"])
    assert err.value.field == field and field in str(err.value)


def test_missing_score_through_the_trainer_and_the_loss(tmp_path):
    ds = Dataset.from_dict({"query": ["a", "b", "c"], "document": ["x", "y", "z"]})
    model = st_model(torch.float32)
    loss = GCLLoss(model)
    with pytest.raises(DataError, match="'score'"):
        make_trainer(model, ds, loss, tmp_path, max_steps=1, per_device_train_batch_size=2).train()
    features = [model.tokenize(["a", "b"]), model.tokenize(["x", "y"])]
    with pytest.raises(DataError, match="'score'"):
        loss(features, None)
    with pytest.raises(DataError, match="exactly 2 text columns"):
        loss(features + [model.tokenize(["1", "2"])], torch.ones(2))
    with pytest.raises(DataError, match="outside score_range"):
        GCLLoss(model, score_range=(0, 3))(features, torch.tensor([1.0, 4.0]))
    with pytest.raises(ValueError, match="unknown weight function"):
        GCLLoss(model, weight_fn="nope")
