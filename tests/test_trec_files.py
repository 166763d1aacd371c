"""TREC run and qrels files: round trips, the written rank order, and errors on malformed lines."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gcl.data.errors import DataError
from gcl.evaluation.trec import read_qrels, read_run, trec_order, write_qrels, write_run
from gcl.metrics import compute_metrics, judge_run

FIXTURE = HealthCheck.function_scoped_fixture  # tmp_path is reused: each example overwrites
IDS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Z", "C")), min_size=1, max_size=8
)


def test_write_run_layout_and_tie_order(tmp_path):
    path = write_run(tmp_path / "r.run", {"q2": {"b": 1.0, "a": 1.0, "c": 2.5}, "q1": {"x": 0.5}},
                     tag="bm25")
    assert path.read_text().splitlines() == [
        "q1 Q0 x 1 0.5 bm25",
        "q2 Q0 c 1 2.5 bm25",  # highest score first
        "q2 Q0 b 2 1.0 bm25",  # tie: descending doc id, as trec_eval ranks it
        "q2 Q0 a 3 1.0 bm25",
    ]


def test_write_run_depth(tmp_path):
    write_run(tmp_path / "r.run", {"q": {f"d{i}": float(i) for i in range(10)}}, depth=3)
    assert read_run(tmp_path / "r.run") == {"q": {"d9": 9.0, "d8": 8.0, "d7": 7.0}}
    with pytest.raises(ValueError, match="depth"):
        write_run(tmp_path / "r.run", {}, depth=0)


def test_trec_order_compares_scores_as_float32():
    # 2**24 + 1 and 2**24 are one float32: a tie, the larger id first; full scores are kept.
    assert trec_order({"a": 16777217.0, "b": 16777216.0}) == [("b", 16777216.0), ("a", 16777217.0)]
    assert trec_order({}) == []


def test_qrels_layout(tmp_path):
    write_qrels(tmp_path / "q.qrels", {"q1": {"b": 2, "a": 0}, "q0": {"z": 1.33}})
    assert (tmp_path / "q.qrels").read_text().splitlines() == [
        "q0 0 z 1.33",
        "q1 0 a 0",
        "q1 0 b 2",
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[FIXTURE])
@given(
    run=st.dictionaries(
        IDS,
        st.dictionaries(IDS, st.floats(allow_nan=False, allow_infinity=True), max_size=6),
        max_size=4,
    )
)
def test_run_round_trip(tmp_path, run):
    path = write_run(tmp_path / "rt.run", run)
    back = read_run(path)
    assert back == {q: d for q, d in run.items() if d}  # a query without documents has no line
    for q, docs in back.items():  # floats come back bit for bit
        for d, s in docs.items():
            assert math.copysign(1, s) == math.copysign(1, run[q][d])


@settings(max_examples=60, deadline=None, suppress_health_check=[FIXTURE])
@given(
    qrels=st.dictionaries(
        IDS,
        st.dictionaries(
            IDS,
            st.one_of(st.integers(-2, 100), st.floats(-10, 1e6, allow_nan=False)),
            min_size=1,
            max_size=6,
        ),
        max_size=4,
    )
)
def test_qrels_round_trip(tmp_path, qrels):
    back = read_qrels(write_qrels(tmp_path / "rt.qrels", qrels))
    assert back == {q: {d: float(g) for d, g in docs.items()} for q, docs in qrels.items()}
    assert all(isinstance(g, float) for docs in back.values() for g in docs.values())


def test_files_evaluate_like_pytrec_eval_parsers(tmp_path):
    """Our readers and pytrec_eval's parsers give the same dicts, hence the same metrics."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(3)
    run, qrels = {}, {}
    for q in range(5):
        docs, scores = rng.choice(50, 20, replace=False), np.round(rng.normal(size=20), 2)
        run[f"q{q}"] = {f"d{d}": float(s) for d, s in zip(docs, scores)}
        docs, grades = rng.choice(50, 10, replace=False), rng.integers(0, 5, 10)
        qrels[f"q{q}"] = {f"d{d}": int(g) for d, g in zip(docs, grades)}
    write_run(tmp_path / "a.run", run)
    write_qrels(tmp_path / "a.qrels", qrels)
    with open(tmp_path / "a.run") as f:
        their_run = pytrec_eval.parse_run(f)
    with open(tmp_path / "a.qrels") as f:
        their_qrels = pytrec_eval.parse_qrel(f)
    our_run, our_qrels = read_run(tmp_path / "a.run"), read_qrels(tmp_path / "a.qrels")
    assert our_run == their_run
    assert our_qrels == their_qrels
    ours = compute_metrics(judge_run(our_run, our_qrels), ["ndcg@10", "map@1000"])
    evaluator = pytrec_eval.RelevanceEvaluator(their_qrels, {"ndcg_cut.10", "map_cut.1000"})
    theirs = evaluator.evaluate(their_run)
    for i, q in enumerate(sorted(qrels)):
        assert ours["ndcg@10"][i] == pytest.approx(theirs[q]["ndcg_cut_10"], abs=1e-12)
        assert ours["map@1000"][i] == pytest.approx(theirs[q]["map_cut_1000"], abs=1e-12)


def test_blank_lines_are_skipped(tmp_path):
    p = tmp_path / "r.run"
    p.write_text("\nq1 Q0 a 1 2.0 t\n   \nq1\tQ0\tb\t2\t1.0\tt\n\n")
    assert read_run(p) == {"q1": {"a": 2.0, "b": 1.0}}


@pytest.mark.parametrize(
    "text, line, field, match",
    [
        ("q1 Q0 a 1 2.0 t\nq1 Q0 b 2 1.0\n", 2, None, "expected 6 fields"),
        ("q1 Q0 a 1 2.0 t extra\n", 1, None, "expected 6 fields"),
        ("q1 Q0 a 1 2.0 t\n\nq1 Q0 b two 1.0 t\n", 3, "rank", "rank 'two' is not an integer"),
        ("q1 Q0 a 1 high t\n", 1, "score", "score 'high' is not a number"),
        ("q1 Q0 a 1 nan t\n", 1, "score", "score is NaN"),
        ("q1 Q0 a 1 2.0 t\nq1 Q0 a 2 1.0 t\n", 2, "docid", "repeated"),
    ],
)
def test_malformed_run_lines(tmp_path, text, line, field, match):
    p = tmp_path / "bad.run"
    p.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        read_run(p)
    err = info.value
    assert err.source == str(p)
    assert err.row == line - 1  # 0-based line index (no header)
    assert err.field == field
    assert f"line {line}:" in str(err)
    assert str(p) in str(err)


@pytest.mark.parametrize(
    "text, line, field, match",
    [
        ("q1 0 a 1\nq1 0 b\n", 2, None, "expected 4 fields"),
        ("q1 0 a 1 x\n", 1, None, "expected 4 fields"),
        ("q1 0 a high\n", 1, "grade", "grade 'high' is not a number"),
        ("q1 0 a inf\n", 1, "grade", "not finite"),
        ("q1 0 a nan\n", 1, "grade", "NaN"),
        ("q1 0 a 1\nq2 0 a 1\nq1 0 a 2\n", 3, "docid", "judged twice"),
    ],
)
def test_malformed_qrels_lines(tmp_path, text, line, field, match):
    p = tmp_path / "bad.qrels"
    p.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        read_qrels(p)
    err = info.value
    assert (err.source, err.row, err.field) == (str(p), line - 1, field)
    assert f"line {line}:" in str(err)


def test_write_rejects_unwritable_values(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        write_run(tmp_path / "r", {"q 1": {"a": 1.0}})
    with pytest.raises(ValueError, match="whitespace"):
        write_run(tmp_path / "r", {"q": {"": 1.0}})
    with pytest.raises(ValueError, match="whitespace"):
        write_run(tmp_path / "r", {"q": {"a": 1.0}}, tag="my tag")
    with pytest.raises(ValueError, match="NaN"):
        write_run(tmp_path / "r", {"q": {"a": float("nan")}})
    with pytest.raises(ValueError, match="not finite"):
        write_qrels(tmp_path / "q", {"q": {"a": float("inf")}})
    assert not (tmp_path / "r").exists()


def test_empty_files(tmp_path):
    write_run(tmp_path / "e.run", {})
    write_qrels(tmp_path / "e.qrels", {})
    assert read_run(tmp_path / "e.run") == {}
    assert read_qrels(tmp_path / "e.qrels") == {}


def test_non_utf8_file(tmp_path):
    p = tmp_path / "latin1.qrels"
    p.write_bytes("q1 0 caf\xe9 1\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8") as info:
        read_qrels(p)
    assert info.value.source == str(p)


# ---------------------------------------------------------------------------- ids TREC cannot hold
def test_trec_id_map_keeps_tokens_and_numbers_the_rest_in_id_order():
    from gcl.evaluation.trec import trec_id_map

    assert trec_id_map(["q1", "a-b", "ü"], "q") is None
    ids = [".110 wire connector", "zz", "a b", "", *(f"x{i}" for i in range(8))]
    mapping = trec_id_map(ids, "q")
    assert sorted(mapping.values()) == [f"q{n:02d}" for n in range(1, 13)]
    assert sorted(ids, key=mapping.get) == sorted(ids)  # mapped ids sort as the originals do


UNSAFE_IDS = st.text(alphabet=st.sampled_from([" ", ".", "a", "b", "\t", "é"]), max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[FIXTURE])
@given(
    run=st.dictionaries(UNSAFE_IDS, st.dictionaries(UNSAFE_IDS, st.sampled_from([0.5, 1.0, 2.0]), min_size=1,
                                                    max_size=6), min_size=1, max_size=4),
    grades=st.lists(st.integers(0, 3), min_size=24, max_size=24),
)
def test_write_trec_files_maps_unsafe_ids_and_keeps_the_metrics(tmp_path, run, grades):
    """Home Depot's query ids are query texts (spaces, leading dots): the files get numbered ids,
    the mapping is written beside them, and metrics from the files equal those of the originals
    (ties included: the numbering keeps trec_eval's doc id order)."""
    import json

    from gcl.evaluation.trec import write_trec_files

    qrels = {q: {d: grades[i % len(grades)] for i, d in enumerate(docs)} for q, docs in run.items()}
    paths = write_trec_files(tmp_path, "s", run, qrels, tag="my model")
    ids = json.loads((tmp_path / "s.trec_ids.json").read_text()) if "ids" in paths else {}
    qback, dback = ids.get("queries", {}), ids.get("documents", {})

    def back(table):
        return {qback.get(q, q): {dback.get(d, d): v for d, v in docs.items()} for q, docs in table.items()}

    assert back(read_run(paths["run"])) == run
    assert back(read_qrels(paths["qrels"])) == qrels
    assert all(line.endswith(" my_model") for line in paths["run"].read_text().splitlines())
    names = ["ndcg@10", "map@1000", "mrr@1000"]
    got = compute_metrics(judge_run(read_run(paths["run"]), read_qrels(paths["qrels"])), names)
    want = compute_metrics(judge_run(run, qrels), names)
    for name in names:  # queries in sorted id order on both sides: the numbering keeps that order
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-12)


def test_write_trec_files_leaves_token_ids_alone(tmp_path):
    from gcl.evaluation.trec import write_trec_files

    (tmp_path / "s.trec_ids.json").write_text("{}")  # stale, from an earlier run
    paths = write_trec_files(tmp_path, "s", {"q1": {"d1": 1.0}}, {"q1": {"d1": 2}})
    assert "ids" not in paths and not (tmp_path / "s.trec_ids.json").exists()
    assert paths["run"].read_text() == "q1 Q0 d1 1 1.0 gcl\n"


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=3),
                       st.one_of(st.sampled_from([0.0, -0.0, 1.0, 1.0 + 1e-9, 3.5e38, -np.inf, np.inf]),
                                 st.floats(allow_nan=False)), max_size=12))
def test_trec_order_is_the_naive_sort(docs):
    """The one tie rule (gcl.metrics.runs, shared with judge_run): float32 score, then id, both descending."""
    with np.errstate(over="ignore"):
        naive = sorted(docs.items(), key=lambda kv: (np.float32(kv[1]), kv[0]), reverse=True)
    assert trec_order(docs) == naive
