"""experiments/pair_order.py: concordance of judged pairs by grade gap, against naive loops."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest_trainer import tiny_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import pair_order


def naive_bins(judgments: pd.DataFrame, score_of) -> dict[str, list[float]]:
    """Every unordered pair of one query's judgments, checked one at a time."""
    out: dict[str, list[float]] = {lab: [] for lab in (*pair_order.LABELS, "all")}
    rows = list(judgments.itertuples(index=False))
    for a in range(len(rows)):
        for b in range(a + 1, len(rows)):
            ra, rb = rows[a], rows[b]
            if ra.query_id != rb.query_id or ra.score == rb.score:
                continue
            hi, lo = (ra, rb) if ra.score > rb.score else (rb, ra)
            sh, sl = score_of(hi), score_of(lo)
            c = 1.0 if sh > sl else 0.5 if sh == sl else 0.0
            gap = hi.score - lo.score
            lab = "1/3" if gap <= 0.34 else "2/3" if gap <= 0.67 else "1" if gap <= 1.01 else ">1"
            out[lab].append(c)
            out["all"].append(c)
    return out


def test_pairs_and_bins_match_a_naive_loop():
    rng = np.random.default_rng(3)
    grades = np.array([1.0, 1.33, 1.67, 2.0, 2.33, 2.67, 3.0, 1.25, 2.75])
    n = 400
    j = pd.DataFrame({"query_id": rng.choice([f"q{i}" for i in range(60)], n),
                      "doc_id": [f"d{i}" for i in range(n)], "score": rng.choice(grades, n)})
    model_score = dict(zip(j["doc_id"], rng.choice(np.arange(5.0), n)))  # coarse: many ties
    pairs = pair_order.judged_pairs(j)
    s = np.array([model_score[d] for d in j["doc_id"]])
    got = pair_order.by_gap(pairs, pair_order.concordance(s[pairs["hi"]], s[pairs["lo"]]))
    want = naive_bins(j, lambda r: model_score[r.doc_id])
    assert set(got) == set(want)
    for lab, vals in want.items():
        assert got[lab][0] == len(vals) > 0, lab
        assert got[lab][1] == pytest.approx(np.mean(vals), abs=1e-12), lab
    # every pair's better document really has the higher score
    assert (j["score"].to_numpy()[pairs["hi"]] > j["score"].to_numpy()[pairs["lo"]]).all()


def test_end_to_end_scores_are_the_model_cosines(tmp_path, monkeypatch):
    """The script's per-split figures equal a naive per-pair encoding with the model itself."""
    from gcl.data.sources import load_benchmark
    from gcl.encoders.base import load_model
    from gcl.training.config import DataConfig

    model_dir = str(tiny_model())
    out = tmp_path / "po.json"
    argv = ["data.source=synthetic", "--arm", f"tiny={model_dir}", f"tiny={model_dir}",
            "--arm", f"again={model_dir}", "--reference", "again", "--bootstrap", "50",
            "--train-queries", "30", "--threads", "1", "--splits", "novel_query", "--out", str(out)]
    rc = pair_order.main(argv)
    assert rc == 0
    res = json.loads(out.read_text())
    arm = res["arms"]["tiny"]
    assert [m["model"] for m in arm["models"]] == [model_dir, model_dir]
    assert arm["summary"]["dev"]["all"]["std"] == 0.0 and arm["summary"]["dev"]["all"]["seeds"] == 2
    assert arm["summary"]["dev"]["all"]["vs_reference"] == {"diff": 0.0, "low": 0.0, "high": 0.0}  # same model

    bench = load_benchmark(DataConfig(source="synthetic"))
    model = load_model(model_dir)
    model.eval()
    for name, split in (("dev", bench.dev), ("novel_query", bench.eval_split("novel_query"))):
        cache: dict[tuple[str, str], float] = {}

        def cos(r, split=split, cache=cache):
            key = (r.query_id, r.doc_id)
            if key not in cache:
                q = model.encode_queries(split.queries.loc[[r.query_id]])[0]
                d = model.encode_documents(split.documents.loc[[r.doc_id]])[0]
                cache[key] = float(q @ d / (np.linalg.norm(q) * np.linalg.norm(d)))
            return cache[key]

        want = naive_bins(split.judgments, cos)
        for lab, vals in want.items():
            assert arm["summary"][name][lab]["pairs"] == len(vals), (name, lab)
        # each pair's two cosines, batch-encoded by the script, equal the one-at-a-time encodings
        j = split.judgments.reset_index(drop=True)
        pairs = pair_order.judged_pairs(j)
        with torch.no_grad():
            hi, lo = pair_order.pair_scores(model, split, pairs)
        rows = list(j.itertuples(index=False))
        assert np.allclose(hi, [cos(rows[i]) for i in pairs["hi"]], atol=1e-4)
        assert np.allclose(lo, [cos(rows[i]) for i in pairs["lo"]], atol=1e-4)
        conc = pair_order.by_gap(pairs, pair_order.concordance(hi, lo))
        for lab in want:
            assert arm["summary"][name][lab]["mean"] == pytest.approx(conc[lab][1], nan_ok=True), (name, lab)
    assert res["pairs"]["novel_query"] == len(want["all"])  # the last split of the loop

    # a re-run reads every model's pairs from <out>.cache/ and encodes nothing
    import gcl.encoders.base

    def no_loading(*a, **k):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(gcl.encoders.base, "load_model", no_loading)
    out.rename(tmp_path / "first.json")
    assert pair_order.main(argv) == 0
    again = json.loads(out.read_text())
    assert again["arms"]["tiny"]["summary"] == res["arms"]["tiny"]["summary"]


def test_bad_arm_and_missing_model_are_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit, match="NAME=MODEL"):
        pair_order.main(["--arm", "no-equals-sign", "--out", str(tmp_path / "x.json")])
    rc = pair_order.main(["data.source=synthetic", "--arm", f"gone={tmp_path / 'nope'}", "--splits",
                          "--train-queries", "5", "--out", str(tmp_path / "y.json")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no such model directory: gone:" in err and "nope" in err and "Traceback" not in err
    assert not (tmp_path / "y.json").exists()
    rc = pair_order.main(["data.source=synthetic", "--arm", f"tiny={tiny_model()}", "--reference", "other",
                          "--splits", "--train-queries", "5", "--out", str(tmp_path / "z.json")])
    assert rc == 2 and "--reference 'other' is not an --arm" in capsys.readouterr().err


def test_paired_difference_resamples_queries_not_pairs():
    """Point estimate = mean pair difference; interval = a naive bootstrap that copies each drawn
    query's pairs, with the same multinomial draws."""
    rng = np.random.default_rng(5)
    n = 300
    pairs = pd.DataFrame({"query_id": rng.choice([f"q{i}" for i in range(40)], n),
                          "gap": rng.choice([1 / 3, 2 / 3, 1.0, 4 / 3], n)})
    a, b = rng.choice([0.0, 0.5, 1.0], n), rng.choice([0.0, 0.5, 1.0], n)
    got = pair_order.paired_difference(pairs, a, b, rounds=200, seed=7)
    assert got["all"]["diff"] == pytest.approx((a - b).mean())
    codes, uniq = pd.factorize(pairs["query_id"])
    w = np.random.default_rng(7).multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)), size=200)
    for lab, lo_gap, hi_gap in (("1/3", 0, 0.34), (">1", 1.01, 9), ("all", 0, 9)):
        sel = (pairs["gap"] > lo_gap) & (pairs["gap"] <= hi_gap) if lab != "1/3" else pairs["gap"] <= 0.34
        sel = sel.to_numpy()
        assert got[lab]["diff"] == pytest.approx((a[sel] - b[sel]).mean())
        boots = []
        for row in w:
            diffs = [a[i] - b[i] for q in range(len(uniq)) for _ in range(row[q])
                     for i in np.flatnonzero((codes == q) & sel)]
            boots.append(np.mean(diffs))
        assert got[lab]["low"] == pytest.approx(np.quantile(boots, 0.025))
        assert got[lab]["high"] == pytest.approx(np.quantile(boots, 0.975))
        assert got[lab]["low"] < got[lab]["diff"] < got[lab]["high"]
    same = pair_order.paired_difference(pairs, a, a, rounds=50)
    assert same["all"] == {"diff": 0.0, "low": 0.0, "high": 0.0}
