"""experiments/results_table.py: the smoke profile end to end, resuming, the report against naive sums."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import results_report as rr  # noqa: E402
import results_table as rt  # noqa: E402

SPLITS = rr.SPLITS


@pytest.fixture
def calls(monkeypatch, tmp_path):
    """Every command goes to ``gcl``'s main in this process (fast); ``calls`` lists them."""
    from gcl.cli.main import main

    made: list[list[str]] = []

    def in_process(cmd, log):
        made.append(cmd)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            if cmd[1].endswith("st_peers.py"):
                import st_peers

                return st_peers.main(cmd[2:])
            assert cmd[1:3] == ["-m", "gcl.cli.main"], cmd
            return main(cmd[3:])

    monkeypatch.setattr(rt, "EXECUTE", in_process)
    monkeypatch.setenv("GCL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(rt, "versions", lambda: {"stub": True})  # no git call per run
    return made


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_models import make_tiny_sentence_transformer

    return str(make_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny")))


def smoke(tmp_path, tiny, *extra):
    buf = io.StringIO()
    rc = rt.main(["--profile", "smoke", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
                  "--text-model", tiny, *extra], out=buf)
    return rc, buf.getvalue()


def records(tmp_path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "out" / "runs.jsonl").read_text().splitlines()]


def test_smoke_end_to_end_rerun_skips_and_a_missing_line_runs_again(tmp_path, tiny, calls):
    rc, text = smoke(tmp_path, tiny, "--arms", "bm25,binary,gcl")
    assert rc == 0, text
    assert text.splitlines()[0].startswith("expected total time: ")
    assert "for 3 runs to do" in text.splitlines()[0]
    # bm25: one evaluation (with the ceilings); each trained arm: train + retrieval + judged re-rank
    assert len(calls) == 1 + 2 * 3
    assert sum("train" in c for c in calls) == 2
    recs = records(tmp_path)
    assert [(r["arm"], r["seed"]) for r in recs] == [("bm25", 0), ("binary", 0), ("gcl", 0)]
    assert set(recs[0]["ceilings"]) == set(SPLITS) and set(recs[2]["splits"]) == set(SPLITS)
    assert set(recs[2]["rerank"]) == set(SPLITS) and recs[2]["seen_unseen"]["groups"]["seen"]["queries"] > 0
    assert recs[2]["thresholded"]["in_domain"]["ndcg@10"] >= 0 and recs[2]["dev"]["metric"] == "ndcg@10"
    logged = [json.loads(x) for x in (tmp_path / "work" / "gcl-s0" / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["dev/ndcg@10"], r["dev/err"]) for r in logged if "dev/ndcg@10" in r]
    assert [(c["step"], c["ndcg@10"], c["err"]) for c in recs[2]["dev"]["curve"]] == logged and len(logged) >= 2
    assert recs[2]["dev"]["value"] == max(v for _, v, _ in logged)
    results = json.loads((tmp_path / "work" / "gcl-s0" / "eval" / "results.json").read_text())
    assert recs[2]["splits"] == {s: v["summary"] for s, v in results["splits"].items()}
    for rec in recs:  # each run's per-query figures kept beside runs.jsonl, equal to its evaluation's
        assert rec["per_query"] == f"per_query/{'bm25' if rec['arm'] == 'bm25' else rec['arm'] + '-s0'}.csv.gz"
        kept = pd.read_csv(tmp_path / "out" / rec["per_query"], dtype={"query_id": str}, keep_default_na=False)
        for split in SPLITS:
            live = pd.read_csv(Path(rec["eval_dir"]) / f"{split}_per_query.csv", dtype={"query_id": str},
                               keep_default_na=False).set_index("query_id")
            got = kept[kept["split"] == split].set_index("query_id")
            assert got["err"].to_dict() == live["err"].to_dict() and got["ndcg@10"].to_dict() == live["ndcg@10"].to_dict()
    md = (tmp_path / "out" / "results.md").read_text()
    assert "## Targets (issue 12)" in md and (tmp_path / "out" / "results.png").stat().st_size > 0

    n = len(calls)
    rc, text = smoke(tmp_path, tiny, "--arms", "bm25,binary,gcl")  # everything done: nothing runs
    assert rc == 0 and len(calls) == n and len(records(tmp_path)) == 3
    assert "for 0 runs to do (3 already in" in text.splitlines()[0]

    log = tmp_path / "out" / "runs.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:2]) + "\n")  # gcl's line lost, its outputs kept: re-recorded, nothing run
    assert smoke(tmp_path, tiny, "--arms", "bm25,binary,gcl")[0] == 0
    assert len(calls) == n and records(tmp_path)[2]["splits"] == recs[2]["splits"]

    log.write_text("\n".join(lines[:2]) + "\n")  # gcl's line and its run directory lost: exactly that run again
    shutil.rmtree(tmp_path / "work" / "gcl-s0")
    assert smoke(tmp_path, tiny, "--arms", "bm25,binary,gcl")[0] == 0
    again = calls[n:]
    assert len(again) == 3 and all("gcl-s0" in " ".join(c) for c in again)
    assert [r["arm"] for r in records(tmp_path)] == ["bm25", "binary", "gcl"]


def test_a_soup_arm_trains_its_ingredients_soups_them_and_is_remade_when_its_recipe_changes(
        tmp_path, tiny, calls, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setitem(rt.ARMS, "gcl-soup", rt.Arm("soup", soup=(("gcl", 0.75), ("binary", 0.25))))
    rc, text = smoke(tmp_path, tiny, "--arms", "gcl-soup")
    assert rc == 0, text
    kinds = [c[3] if c[1:3] == ["-m", "gcl.cli.main"] else c[1] for c in calls]
    assert kinds == ["train", "train", "soup", "evaluate", "evaluate"]
    work = tmp_path / "work"
    final = work / "gcl-soup-s0" / "final"
    rec = json.loads((final / "gcl_soup.json").read_text())
    # the ingredients are the models the table evaluates for those arms (here the best dev ones)
    ing = [Path(rt.model_dir(arm, work / f"{arm}-s0", None)) for arm in ("gcl", "binary")]
    assert [d.name for d in ing] == ["best", "best"]
    assert rec["weights"] == [0.75, 0.25] and rec["models"] == [str(d) for d in ing]
    a, b, s = (load_file(str(d / "model.safetensors")) for d in (*ing, final))
    k = next(k for k in a if not torch.equal(a[k], b[k]))
    assert torch.allclose(s[k], 0.75 * a[k] + 0.25 * b[k], atol=1e-6)
    (r,) = records(tmp_path)
    assert r["arm"] == "gcl-soup" and set(r["splits"]) == set(SPLITS) and set(r["rerank"]) == set(SPLITS)
    assert any(c.startswith("gcl soup ") for c in r["commands"]) and r["dev"] is None
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| gcl-soup | 1 | — | — | — (a weight soup of trained arms: no training of its own) |" in md
    # the same recipe again, runs.jsonl lost: the soup and its evaluations are kept, nothing runs
    (tmp_path / "out" / "runs.jsonl").unlink()
    n = len(calls)
    assert smoke(tmp_path, tiny, "--arms", "gcl-soup")[0] == 0 and len(calls) == n
    # another recipe: the soup is made again and evaluated again (the old evaluations are not reused)
    monkeypatch.setitem(rt.ARMS, "gcl-soup", rt.Arm("soup", soup=(("gcl", 0.5), ("binary", 0.5))))
    (tmp_path / "out" / "runs.jsonl").unlink()
    assert smoke(tmp_path, tiny, "--arms", "gcl-soup")[0] == 0
    again = [c[3] for c in calls[n:]]
    assert again == ["soup", "evaluate", "evaluate"]
    assert json.loads((final / "gcl_soup.json").read_text())["weights"] == [0.5, 0.5]


def test_a_killed_training_resumes_from_its_checkpoint_and_a_partial_evaluation_is_redone(tmp_path, tiny, calls):
    from gcl.config import load_config
    from gcl.training.config import TrainConfig
    from gcl.training.trainer import Trainer

    plan = rt.make_plan(rt.build_parser().parse_args(
        ["--profile", "smoke", "--arms", "gcl", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"),
         "--text-model", tiny]))
    run_dir = tmp_path / "work" / "gcl-s0"
    cmd = rt.train_command(plan, "gcl", 0, run_dir, resume=False)
    cfg = load_config(TrainConfig, cmd[4], [a for a in cmd[5:] if "=" in a])
    Trainer(cfg).fit(stop_after=2)  # "killed" after step 2: checkpoint at step 2 (checkpoint_every=2), no final/
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "final").exists()
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "results.json").write_text("{partial")  # a killed evaluation's leftovers
    rc, text = smoke(tmp_path, tiny, "--arms", "gcl")
    assert rc == 0, text
    train_calls = [c for c in calls if "train" in c]
    assert len(train_calls) == 1 and train_calls[0][-1] == "--resume"
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]
    assert steps == [1, 2, 3, 4]  # continued at step 3, not started again
    assert json.loads((run_dir / "eval" / "results.json").read_text())["splits"]
    assert len(calls) == 3


def test_a_sentence_transformers_peer_is_trained_by_st_peers_and_evaluated(tmp_path, tiny, calls):
    rc, text = smoke(tmp_path, tiny, "--arms", "st-cosent")
    assert rc == 0, text
    assert [c[1].endswith("st_peers.py") for c in calls] == [True, False, False]
    assert calls[0][2:8] == ["--arm", "cosent", "--config", rt.repo_path(rt.BASE_CONFIG), "--seed", "0"]
    (rec,) = records(tmp_path)
    peer = json.loads((tmp_path / "work" / "st-cosent-s0" / "peer.json").read_text())
    curve = [{"step": h["step"], "ndcg@10": h["eval_dev_ndcg@10"], "err": h["eval_dev_err"]} for h in peer["dev_history"]]
    assert rec["dev"] == {"metric": "ndcg@10", "value": peer["best_metric"], "step": peer["best_step"], "curve": curve}
    assert curve and max(c["ndcg@10"] for c in curve) == peer["best_metric"]
    assert set(rec["rerank"]) == set(SPLITS) and rec["seen_unseen"] is None  # no gcl train run to replay


def test_a_failed_run_is_reported_not_recorded_and_a_cut_line_does_not_swallow_the_next(tmp_path, tiny, calls,
                                                                                          monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.jsonl").write_text('{"arm": "bm25", "seed"')  # a line cut by a kill
    real = rt.EXECUTE
    monkeypatch.setattr(rt, "EXECUTE", lambda cmd, log: 3 if "train" in cmd else real(cmd, log))
    rc, text = smoke(tmp_path, tiny, "--arms", "bm25,gcl")
    assert rc == 1 and "[gcl seed 0] FAILED exit 3: gcl train" in text
    assert "error: 1 run(s) failed: [('gcl', 0)]" in text
    lines = (out / "runs.jsonl").read_text().splitlines()
    assert lines[0] == '{"arm": "bm25", "seed"' and [json.loads(x)["arm"] for x in lines[1:]] == ["bm25"]
    assert rt.done_runs(out / "runs.jsonl") == {("bm25", 0)}


def test_bad_arms_and_seeds_are_clear_errors(tmp_path, capsys, calls):
    assert rt.main(["--arms", "gcl,bogus", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --arms: unknown arm(s) ['bogus']; choose from bm25, zero-shot") and "Traceback" not in err
    assert rt.main(["--seeds", "0,x", "--out", str(tmp_path)]) == 2
    assert "error: --seeds: not a comma-separated list of integers" in capsys.readouterr().err
    assert calls == []


def test_expected_time_is_printed_first_from_the_table_and_missing_arms_are_skipped(tmp_path, monkeypatch, calls):
    out = tmp_path / "out"
    out.mkdir()
    plan = rt.make_plan(rt.build_parser().parse_args(["--profile", "full", "--out", str(out), "--work", str(tmp_path / "w"),
                                                       "--best-config", "configs/does_not_exist.yaml"]))
    todo = [("binary", 2), ("gcl", 2)]
    done = [r for r in plan.runs() if r not in todo and rt.available(plan, r[0]) is None]
    (out / "runs.jsonl").write_text("".join(json.dumps({"arm": a, "seed": s}) + "\n" for a, s in done))

    class Stop(Exception):
        pass

    def stop(*_):
        raise Stop

    monkeypatch.setattr(rt, "run_one", stop)
    buf = io.StringIO()
    with pytest.raises(Stop):
        rt.run(plan, out=buf)
    lines = buf.getvalue().splitlines()
    epochs = min(3496 * 64 / rt.HOMEDEPOT_EPOCH_PAIRS, rt.STOP_EPOCHS)  # the base config: 8 epochs, early stopping
    assert epochs == rt.STOP_EPOCHS == rt.expected_epochs(plan)
    dev_evals = int(epochs * rt.HOMEDEPOT_EPOCH_PAIRS / 64 // 218) + 1  # every half epoch, and at the end
    assert dev_evals == rt.expected_dev_evals(plan) == 10  # 4.9 epochs = 2141 steps of 64
    per_run = {a: rt.EST_SETUP_MIN["gcl"] + rt.EST_MIN_PER_EPOCH[a] * epochs + rt.EST_DEV_EVAL_MIN * dev_evals
               + rt.EST_EVAL_MIN for a, _ in todo}
    expected = sum(per_run.values()) + rt.EST_COLD_MIN
    assert lines[0].startswith(f"expected total time: {expected:.0f} min ({expected / 60:.1f} h) for 2 runs to do")
    assert any(x.startswith("[gcl-best] skipped: configs/does_not_exist.yaml does not exist") for x in lines)

    # a run whose training finished earlier (train_done.json in its run directory) counts its evaluation only
    run_dir = rt.run_directory(plan, "gcl", 2)
    run_dir.mkdir(parents=True)
    (run_dir / "train_done.json").write_text(json.dumps({"seconds": 1.0, "command": "gcl train ..."}))
    buf = io.StringIO()
    with pytest.raises(Stop):
        rt.run(plan, out=buf)
    expected = per_run["binary"] + rt.EST_EVAL_MIN + rt.EST_COLD_MIN
    assert buf.getvalue().startswith(f"expected total time: {expected:.0f} min ({expected / 60:.1f} h) for 2 runs to do")


def _record(arm, seed, ndcg, err, dev=None, eval_dir=None):
    splits = {s: {"ndcg@10": ndcg + i / 100, "err": err + i / 100, "rbp@0.9": 0.1, "map@1000": 0.2, "mrr@1000": 0.3}
              for i, s in enumerate(SPLITS)}
    rec = {"arm": arm, "seed": seed, "profile": "full", "splits": splits, "seconds": 60.0}
    if dev is not None:
        rec["dev"] = {"metric": "ndcg@10", "value": dev, "step": 10}
    if eval_dir is not None:
        rec["eval_dir"] = str(eval_dir)
    return rec


def test_report_mean_std_and_paired_difference_equal_a_naive_computation(tmp_path):
    rng = np.random.default_rng(0)
    queries = [f"q{i}" for i in range(30)]
    per_query: dict = {}
    rows = []
    # binary-thresholded has the better dev metric in the mean, so it is the baseline (not binary)
    spec = {"binary": ([0.40, 0.41, 0.39], [0.35, 0.36, 0.34], [0.60, 0.61, 0.60]),
            "binary-thresholded": ([0.42, 0.40, 0.41], [0.36, 0.37, 0.35], [0.62, 0.61, 0.63]),
            "gcl": ([0.43, 0.44, 0.40], [0.40, 0.41, 0.36], [0.50, 0.50, 0.50])}
    for arm, (nd, er, dev) in spec.items():
        for seed in range(3):
            d = tmp_path / arm / str(seed)
            d.mkdir(parents=True)
            for s in SPLITS:
                frame = pd.DataFrame({"query_id": queries, "ndcg@10": rng.random(30), "err": rng.random(30)})
                frame.to_csv(d / f"{s}_per_query.csv", index=False)
                per_query[(arm, seed, s)] = frame.set_index("query_id")
            rows.append(_record(arm, seed, nd[seed], er[seed], dev[seed], d))
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    buf = io.StringIO()
    rr.report(out, out=buf)
    md = (out / "results.md").read_text()
    assert buf.getvalue() == md + "\n"  # printed too
    assert "**binary-thresholded**: the best mean best-dev ndcg@10" in md and "## Paired difference vs binary-thresholded" in md

    nd = [0.43 + 1 / 100, 0.44 + 1 / 100, 0.40 + 1 / 100]  # gcl, novel_query (split index 1)
    row = next(x for x in md.split("## ndcg@10")[1].splitlines() if x.startswith("| gcl |"))
    assert f"{statistics.mean(nd):.4f} ± {statistics.stdev(nd):.4f}" in row

    g = [0.40, 0.41, 0.36]
    b = [0.36, 0.37, 0.35]
    diffs = [x - y for x, y in zip(g, b)]  # the same for every split (both shifted by i / 100)
    rel = 100 * ((sum(g) / 3 + 0.03) / (sum(b) / 3 + 0.03) - 1)  # zero_shot
    err_section = md.split("## Paired difference")[1].split("### err")[1]
    row = next(x for x in err_section.splitlines() if x.startswith("| gcl |"))
    zero_shot = row.split(" | ")[4]
    assert zero_shot.startswith(f"{statistics.mean(diffs):+.4f} ± {statistics.stdev(diffs):.4f} ({rel:+.1f}%) 3/3")

    # the paired test over queries: each query averaged over the 3 seeds, then gcl - baseline
    from gcl.evaluation.compare import paired_compare

    avg = {arm: sum(per_query[(arm, s, "zero_shot")]["err"] for s in range(3)) / 3 for arm in ("gcl", "binary-thresholded")}
    naive = [sum(per_query[(arm, s, "zero_shot")]["err"][q] for s in range(3)) / 3 for arm in ("gcl",) for q in queries]
    assert np.allclose(avg["gcl"].to_numpy(), naive)
    ref = paired_compare(avg["binary-thresholded"].to_numpy(), avg["gcl"].to_numpy())
    assert f"p = {ref.p_value:.3f} [{ref.ci_low:+.4f}, {ref.ci_high:+.4f}]" in zero_shot

    targets = md.split("## Targets (issue 12)")[1]
    e = 100 * ((sum(g) / 3) / (sum(b) / 3) - 1)
    assert f"in-domain gcl − binary-thresholded ≥ +15% ERR and +3% nDCG@10: ERR {e:+.1f}%" in targets
    assert "→ **missed**" in targets.splitlines()[2]
    assert (out / "results.png").stat().st_size > 0


def test_each_new_gcl_configuration_is_also_paired_with_the_papers_gcl(tmp_path):
    # the dev rule of a new configuration compared it with `gcl` (same sampler): the report pairs it
    # with `gcl` too, seed for seed, and only the gcl arms (never a binary arm or bm25) are listed there
    rows = [_record("binary-thresholded", s, 0.40, 0.30, 0.6) for s in range(3)]
    rows += [_record("gcl", s, nd, er, 0.5) for s, nd, er in ((0, 0.41, 0.33), (1, 0.43, 0.32), (2, 0.40, 0.35))]
    rows += [_record("gcl-reciprocal", s, nd, er, 0.55) for s, nd, er in ((0, 0.42, 0.33), (1, 0.42, 0.34), (2, 0.45, 0.30))]
    rows += [_record("bm25", 0, 0.36, 0.31)]
    md = _report(rows, tmp_path / "out")
    section = md.split("## Paired difference vs gcl (same seed)")[1].split("\n## ")[0]
    names = [line.split(" | ")[0] for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert set(names) - {"| arm"} == {"| gcl-reciprocal"}
    for metric, g, r in (("ndcg@10", [0.41, 0.43, 0.40], [0.42, 0.42, 0.45]), ("err", [0.33, 0.32, 0.35], [0.33, 0.34, 0.30])):
        row = next(x for x in section.split(f"### {metric}")[1].splitlines() if x.startswith("| gcl-reciprocal |"))
        d = [a - b for a, b in zip(r, g)]
        ahead = sum(x > 1e-12 for x in d)
        in_domain = row.split(" | ")[1]
        rel = 100 * (statistics.mean(r) / statistics.mean(g) - 1)
        assert in_domain.startswith(f"{statistics.mean(d):+.4f} ± {statistics.stdev(d):.4f} ({rel:+.1f}%) {ahead}/3")
    # without the paper's GCL in the table there is nothing to pair with
    assert "## Paired difference vs gcl " not in _report([r for r in rows if r["arm"] != "gcl"], tmp_path / "no_gcl")


def test_an_arm_with_fewer_seeds_is_compared_with_the_baseline_runs_of_its_own_seeds(tmp_path):
    # gcl-best ran seed 0 only, the baseline seeds 0-2: its relative difference and its target figure
    # use the baseline's seed-0 run (paired), not the baseline's mean over three seeds.
    rows = [_record("binary-thresholded", s, nd, er, 0.6) for s, nd, er in ((0, 0.40, 0.30), (1, 0.50, 0.40), (2, 0.60, 0.50))]
    rows += [_record("gcl", s, 0.41, 0.33) for s in range(3)] + [_record("gcl-best", 0, 0.42, 0.36)]
    md = _report(rows, tmp_path / "out")
    err_section = md.split("## Paired difference")[1].split("### err")[1]
    row = next(x for x in err_section.splitlines() if x.startswith("| gcl-best |"))
    assert row.split(" | ")[1].startswith(f"+0.0600 ({100 * (0.36 / 0.30 - 1):+.1f}%) 1/1")  # in_domain: seed 0 only
    targets = md.split("## Targets (issue 12)")[1]
    assert f"in-domain gcl-best − binary-thresholded ≥ +15% ERR and +3% nDCG@10: ERR {100 * (0.36 / 0.30 - 1):+.1f}%" in targets


def test_report_without_a_finished_run_says_so(tmp_path):
    (tmp_path / "runs.jsonl").write_text('{"arm": "bm')  # only a line cut by a kill
    buf = io.StringIO()
    rr.report(tmp_path, out=buf)
    assert "holds no finished run: nothing to report" in buf.getvalue() and not (tmp_path / "results.md").exists()


def test_the_random_sampler_arms_train_with_random_batches_and_compete_for_the_binary_baseline(tmp_path):
    """``*-random`` arms add ``batch.sampler=random`` to their ``gcl train`` command (and nothing
    else changes); the binary baseline is the binary arm with the best dev metric, random or not."""
    plan = rt.make_plan(rt.build_parser().parse_args(["--profile", "quick", "--out", str(tmp_path / "o"),
                                                      "--work", str(tmp_path / "w")]))
    grouped = rt.train_command(plan, "binary-thresholded", 1, tmp_path / "a", False)
    random = rt.train_command(plan, "binary-thresholded-random", 1, tmp_path / "a", False)
    assert "batch.sampler=random" not in grouped
    assert [x for x in random if x != "batch.sampler=random"] == grouped
    assert "batch.sampler=random" in rt.train_command(plan, "gcl-random", 0, tmp_path / "b", False)

    dev = {"binary": 0.50, "binary-thresholded": 0.51, "binary-thresholded-random": 0.52}
    rows = [_record(arm, s, 0.40, 0.30, d) for arm, d in dev.items() for s in range(2)]
    rows += [_record("gcl-random", s, 0.41, 0.33) for s in range(2)]
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rr.report(out, out=io.StringIO())
    md = (out / "results.md").read_text()
    assert "**binary-thresholded-random**: the best mean best-dev ndcg@10" in md
    assert "in-domain gcl-random − binary-thresholded-random ≥ +15% ERR" in md
    # without a dev figure for every binary arm the rule falls back to the thresholded one
    for r in rows:
        if r["arm"] == "binary":
            del r["dev"]
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rr.report(out, out=io.StringIO())
    assert "**binary-thresholded**: no dev metric recorded for every binary arm" in (out / "results.md").read_text()


def test_without_every_dev_figure_the_fallback_is_a_thresholded_arm_whichever_are_run(tmp_path):
    """The rule's fallback is the fair (thresholded) arm also when ``binary-thresholded`` itself
    was not run: ``binary`` + ``binary-thresholded-random`` falls back to the random-batch one."""
    rows = [_record("binary", 0, 0.40, 0.30, 0.55), _record("binary-thresholded-random", 0, 0.40, 0.30)]
    best, why = rr.choose_binary(rr.by_arm(rows))
    assert (best, "thresholded" in best) == ("binary-thresholded-random", True), why


def test_the_plot_gives_every_arm_its_own_colour(tmp_path, monkeypatch):
    """Every arm of the full profile (more than the 10 colours of matplotlib's default cycle) has bars of its own colour."""
    import matplotlib.figure

    seen = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda fig, *a, **k: seen.append(
        [[tuple(c.patches[0].get_facecolor()) for c in ax.containers if hasattr(c, "patches")] for ax in fig.axes]))
    arms = rr.by_arm([_record(a, 0, 0.4, 0.3) for a in rt.PROFILES["full"].arms])
    assert len(arms) > 10
    rr.plot(arms, tmp_path / "p.png")
    assert [len(set(colours)) for colours in seen[0]] == [len(arms)] * 2


def test_an_empty_group_is_a_dash_not_nan():
    assert rr.mean_std(np.array([float("nan"), float("nan")])) == "—"
    assert rr.mean_std(np.array([0.5, float("nan")])) == "0.5000"
    assert rr.mean_std(np.array([0.5, 0.7])) == f"0.6000 ± {statistics.stdev([0.5, 0.7]):.4f}"


def test_the_peer_target_uses_the_gcl_arm_best_on_dev(tmp_path):
    """'best gcl configuration ≥ every peer' checks the gcl arm with the best mean dev metric
    (here gcl-random, although gcl-best was run), and says why."""
    rows = [_record("binary-thresholded", s, 0.40, 0.30, 0.50) for s in range(2)]
    rows += [_record("gcl-best", s, 0.39, 0.29, d) for s, d in ((0, 0.52), (1, 0.49))]  # mean 0.505
    rows += [_record("gcl-random", s, 0.45, 0.35, 0.51) for s in range(2)]  # mean 0.51: chosen
    rows += [_record("st-mnrl-thresholded", 0, 0.42, 0.32)]
    md = _report(rows, tmp_path / "a")
    line = next(x for x in md.splitlines() if "every sentence-transformers peer" in x)
    assert line.startswith("- gcl-random ≥ every sentence-transformers peer") and "ahead everywhere → **met**" in line
    assert "**gcl-random**: the best mean best-dev ndcg@10" in line and "gcl-best 0.5050 (n = 2)" in line
    # one gcl arm without a dev record: the rule falls back to gcl-best, which is behind the peer
    rows = [r for r in rows if r["arm"] != "gcl-random"] + [_record("gcl-random", s, 0.45, 0.35) for s in range(2)]
    line = next(x for x in _report(rows, tmp_path / "b").splitlines() if "every sentence-transformers peer" in x)
    assert line.startswith("- gcl-best ≥ every sentence-transformers peer") and "→ **missed**" in line


def test_arms_run_with_different_seeds_are_chosen_on_the_seeds_they_share(tmp_path):
    """The dev corpus is drawn per seed, so a two-seed arm is set against the others' same two
    seeds: over all seeds gcl-best's low seed 2 would hand the choice to gcl-random."""
    rows = [_record("binary-thresholded", s, 0.40, 0.30, 0.50) for s in range(3)]
    rows += [_record("gcl-best", s, 0.39, 0.29, d) for s, d in ((0, 0.53), (1, 0.53), (2, 0.47))]  # 0.51; 0.53 on 0-1
    rows += [_record("gcl-random", s, 0.45, 0.35, 0.52) for s in range(2)]
    rows += [_record("st-mnrl-thresholded", 0, 0.42, 0.32)]
    md = _report(rows, tmp_path / "a")
    line = next(x for x in md.splitlines() if "every sentence-transformers peer" in x)
    assert line.startswith("- gcl-best ≥ every sentence-transformers peer"), line
    assert "over the seeds every candidate has (0, 1)" in line and "gcl-best 0.5300 (n = 2)" in line
    # the same seeds everywhere: the plain means, no seed note
    rows = [r for r in rows if not (r["arm"] == "gcl-best" and r["seed"] == 2)]
    line = next(x for x in _report(rows, tmp_path / "b").splitlines() if "every sentence-transformers peer" in x)
    assert line.startswith("- gcl-best ≥") and "over the seeds" not in line
    # no seed in common: every run's mean, as before
    assert rr.common_dev_seeds({"a": [{"seed": 0, "dev": {}}], "b": [{"seed": 1, "dev": {"value": 1}}]},
                               ("a", "b")) is None


def test_an_ablation_gets_its_own_paired_section_against_the_arm_it_changes(tmp_path):
    """gcl-best-thresholded is set against gcl-best seed for seed, with the seed-mean difference."""
    rows = [_record("binary-thresholded", s, 0.40, 0.30, 0.50) for s in range(2)]
    rows += [_record("gcl-best", s, 0.41 + s / 100, 0.31, 0.51) for s in range(2)]
    rows += [_record("gcl-best-thresholded", s, 0.43, 0.30 + s / 50, 0.50) for s in range(2)]
    md = _report(rows, tmp_path / "a")
    assert "## Paired difference vs gcl-best (same seed)" in md
    sec = md.split("## Paired difference vs gcl-best (same seed)")[1].split("\n## ")[0]
    ndcg = sec.split("### ndcg@10")[1].split("### err")[0]
    row = next(x for x in ndcg.splitlines() if x.startswith("| gcl-best-thresholded |"))
    # in-domain: 0.43 - (0.41, 0.42) = (+0.02, +0.01), both seeds ahead
    assert row.split(" | ")[1].startswith("+0.0150 ± 0.0071") and "2/2" in row.split(" | ")[1]
    err = next(x for x in sec.split("### err")[1].splitlines() if x.startswith("| gcl-best-thresholded |"))
    assert err.split(" | ")[1].startswith("+0.0000 ± 0.0141") and "1/2" in err.split(" | ")[1]
    assert "binary-thresholded |" not in sec  # only the ablation
    # a second ablation of the same arm joins its section as a row, not a second section
    rows += [_record("gcl-best-one-way", s, 0.40, 0.30, 0.50) for s in range(2)]
    md = _report(rows, tmp_path / "c")
    assert md.count("## Paired difference vs gcl-best (same seed)") == 1
    sec = md.split("## Paired difference vs gcl-best (same seed)")[1].split("\n## ")[0]
    assert [x.split(" | ")[0] for x in sec.split("### err")[0].splitlines() if x.startswith("| gcl-best-")] == [
        "| gcl-best-thresholded", "| gcl-best-one-way"]
    # without its base arm there is no such section
    assert "vs gcl-best (same seed)" not in _report([r for r in rows if r["arm"] != "gcl-best"], tmp_path / "b")


def test_one_ablation_arm_is_set_against_each_arm_it_changes(tmp_path):
    """gcl-best-one-way has two sections: against gcl-best (the d->q term) and against st-mnrl-all
    (the weights), each with only that arm's row and the seed-for-seed difference."""
    rows = [_record("binary-thresholded", s, 0.40, 0.30, 0.50) for s in range(2)]
    rows += [_record("gcl-best", s, 0.41, 0.31, 0.51) for s in range(2)]
    rows += [_record("st-mnrl-all", s, 0.45 - s / 50, 0.33, 0.52) for s in range(2)]
    rows += [_record("gcl-best-one-way", s, 0.44, 0.32, 0.52) for s in range(2)]
    md = _report(rows, tmp_path / "a")
    for base, diff, ahead in (("gcl-best", "+0.0300 ± 0.0000", "2/2"), ("st-mnrl-all", "+0.0000 ± 0.0141", "1/2")):
        sec = md.split(f"## Paired difference vs {base} (same seed)")[1].split("\n## ")[0]
        ndcg = sec.split("### ndcg@10")[1].split("### err")[0]
        body = [x for x in ndcg.splitlines() if x.startswith("| ") and not x.startswith(("| arm", "|---"))]
        assert [x.split(" | ")[0] for x in body] == ["| gcl-best-one-way"], body
        assert body[0].split(" | ")[1].replace("−", "-").startswith(diff) and ahead in body[0].split(" | ")[1]


def test_gcl_best_one_way_differs_from_gcl_best_only_by_the_direction(tmp_path):
    """Its training command is gcl-best's plus loss.symmetric=false, and the configuration it passed
    its dev rule as is that recipe key for key (that this loss is MNRL's cross-entropy, weighted: the
    MNRL and weighted-mean tests of tests/test_gcl_loss.py)."""
    from dataclasses import replace

    from gcl.config import load_config
    from gcl.training.config import TrainConfig

    plan = rt.make_plan(rt.build_parser().parse_args(["--profile", "budget", "--out", str(tmp_path / "o"),
                                                      "--work", str(tmp_path / "w")]))
    cmds = {a: rt.train_command(plan, a, 0, tmp_path / a, False) for a in ("gcl-best", "gcl-best-one-way")}
    extra = [x for x in cmds["gcl-best-one-way"] if x not in cmds["gcl-best"]]
    assert [x for x in extra if not x.startswith("out_dir=")] == ["loss.symmetric=false"]
    named = load_config(TrainConfig, rt.repo_path("configs/homedepot_gcl_one_way.yaml"), [])
    arm = load_config(TrainConfig, rt.repo_path(plan.best_config), ["loss.symmetric=false"])
    assert named.loss.symmetric is False
    assert replace(named, out_dir="x") == replace(arm, out_dir="x")


def test_gcl_best_thresholded_gives_each_kept_pair_the_weight_gcl_best_gives_it(tmp_path):
    """The arm differs from gcl-best only by the dropped pairs (score < 2): its floor over the kept
    scores reproduces gcl-best's linear weights on them, on Home Depot's grades."""
    from gcl.config import load_config
    from gcl.losses.weights import get_weight_fn
    from gcl.training.config import TrainConfig

    plan = rt.make_plan(rt.build_parser().parse_args(["--profile", "budget", "--out", str(tmp_path / "o"),
                                                      "--work", str(tmp_path / "w")]))
    cmds = {a: rt.train_command(plan, a, 0, tmp_path / a, False) for a in ("gcl-best", "gcl-best-thresholded")}
    extra = [x for x in cmds["gcl-best-thresholded"] if x not in cmds["gcl-best"]]
    assert [x for x in cmds["gcl-best"] if x not in cmds["gcl-best-thresholded"]] == [f"out_dir={tmp_path / 'gcl-best'}"]
    cfg_best = load_config(TrainConfig, rt.repo_path(plan.best_config), [])
    cfg_thr = load_config(TrainConfig, rt.repo_path(plan.best_config), [x for x in extra if not x.startswith("out_dir=")])
    assert cfg_thr.loss.positive_threshold == 2.0 and cfg_best.loss.positive_threshold is None
    grades = np.array([1, 4 / 3, 5 / 3, 2, 7 / 3, 8 / 3, 3, 1.25, 2.5, 2.75])
    judgments = pd.DataFrame({"query_id": [f"q{i}" for i in range(len(grades))],
                              "doc_id": [f"d{i}" for i in range(len(grades))], "score": grades})
    w_best = get_weight_fn(cfg_best.loss.weight_fn, **cfg_best.loss.weight_params)(judgments)
    kept = judgments[judgments["score"] >= 2.0]
    w_thr = get_weight_fn(cfg_thr.loss.weight_fn, **cfg_thr.loss.weight_params)(kept)
    np.testing.assert_allclose(w_thr, w_best[judgments["score"].to_numpy() >= 2.0], rtol=1e-12)
    assert w_best.min() == pytest.approx(0.1) and w_thr.min() == pytest.approx(0.55)  # grade 1 dropped, 2 kept at 0.55


def test_a_soup_is_set_against_the_peers_beside_the_dev_choice_among_trained_arms(tmp_path):
    """A weight soup has no training curve: the dev rule chooses among the trained gcl arms (here
    gcl, not the fallback gcl-best), and the soup gets its own peer section and target line."""
    rows = [_record("binary-thresholded", s, 0.40, 0.30, 0.50) for s in range(2)]
    rows += [_record("gcl", s, 0.38, 0.34, 0.53) for s in range(2)]  # best dev: chosen
    rows += [_record("gcl-best", s, 0.41, 0.31, 0.52) for s in range(2)]
    rows += [_record("gcl-soup", s, 0.44, 0.36) for s in range(2)]  # no dev record
    rows += [_record("st-mnrl-all", s, 0.42, 0.33, 0.51) for s in range(2)]
    md = _report(rows, tmp_path / "a")
    lines = [x for x in md.splitlines() if "every sentence-transformers peer" in x]
    assert len(lines) == 2
    assert lines[0].startswith("- gcl ≥ every sentence-transformers peer (st-mnrl-all)")
    assert "**gcl**: the best mean best-dev ndcg@10" in lines[0] and "gcl-soup" not in lines[0]
    # gcl is behind the peer on nDCG@10 in every split (0.38 < 0.42) and ahead on ERR
    assert "behind on 4: st-mnrl-all in_domain ndcg@10; st-mnrl-all novel_query ndcg@10" in lines[0]
    assert "→ **missed**" in lines[0]
    assert lines[1].startswith("- gcl-soup ≥ every sentence-transformers peer (st-mnrl-all)")
    assert "ahead everywhere → **met**" in lines[1] and "a weight soup of trained arms" in lines[1]
    assert "## gcl against each sentence-transformers peer" in md
    section = md.split("## gcl-soup against each sentence-transformers peer")[1].split("\n## ")[0]
    row = next(x for x in section.split("### ndcg@10")[1].splitlines() if x.startswith("| st-mnrl-all |"))
    assert row.split(" | ")[1].startswith("+0.0200 ± 0.0000 (+4.8%) 2/2")
    # a peer with one seed is compared with that seed of the gcl arm, not with its mean over more
    late = [_record("gcl-soup", 1, 0.30, 0.20)]  # seed 1 far below the peer; seed 0 ahead
    one = [r for r in rows if not (r["arm"] == "gcl-soup" and r["seed"] == 1)
           and not (r["arm"] == "st-mnrl-all" and r["seed"] == 1)] + late
    line = [x for x in _report(one, tmp_path / "c").splitlines() if "every sentence-transformers peer" in x][1]
    assert line.startswith("- gcl-soup ≥ every sentence-transformers peer") and "ahead everywhere" in line
    # without peers the soup adds nothing and the target says so once
    md = _report([r for r in rows if not r["arm"].startswith("st-")], tmp_path / "b")
    assert md.count("no peer was run → not checked") == 1 and "against each sentence-transformers peer" not in md


def test_the_grouped_gcl_arms_are_also_paired_with_the_binary_arm_of_their_sampler(tmp_path):
    # binary-thresholded-random wins the dev rule, so the main paired section is against it; the
    # query-grouped gcl arms also get binary-thresholded (same sampler), the random-batch ones do not
    from gcl.evaluation.compare import paired_compare

    rng = np.random.default_rng(2)
    queries = [f"q{i}" for i in range(25)]
    pq, rows = {}, []
    spec = {"binary-thresholded": (0.40, 0.30, 0.50), "binary-thresholded-random": (0.44, 0.31, 0.60),
            "gcl": (0.39, 0.34, 0.51), "gcl-reciprocal": (0.41, 0.33, 0.52), "gcl-best": (0.45, 0.32, 0.58)}
    for arm, (nd, er, dev) in spec.items():
        for seed in range(3):
            d = tmp_path / arm / str(seed)
            pq[(arm, seed)] = _per_query_dir(d, rng, queries)
            rows.append(_record(arm, seed, nd + seed / 50 * (arm == "gcl"), er, dev, d))
    md = _report(rows, tmp_path / "out")
    assert "**binary-thresholded-random**: the best mean best-dev" in md
    section = md.split("## Paired difference vs binary-thresholded (same seed)")[1].split("\n## ")[0]
    names = {line.split(" | ")[0] for line in section.splitlines() if line.startswith("| ") and "---" not in line}
    assert names - {"| arm"} == {"| gcl", "| gcl-reciprocal"}
    row = next(x for x in section.split("### ndcg@10")[1].splitlines() if x.startswith("| gcl |"))
    d = [0.39 + s / 50 - 0.40 for s in range(3)]  # gcl − binary-thresholded per seed, novel_corpus
    cell = row.split(" | ")[3]
    rel = 100 * ((statistics.mean(0.39 + s / 50 for s in range(3)) + 0.02) / 0.42 - 1)
    assert cell.startswith(f"{statistics.mean(d):+.4f} ± {statistics.stdev(d):.4f} ({rel:+.1f}%) 2/3")
    avg = {a: sum(pq[(a, s)]["novel_corpus"]["ndcg@10"] for s in range(3)) / 3 for a in ("gcl", "binary-thresholded")}
    ref = paired_compare(avg["binary-thresholded"].to_numpy(), avg["gcl"].to_numpy())
    assert f"p = {ref.p_value:.3f} [{ref.ci_low:+.4f}, {ref.ci_high:+.4f}]" in cell
    # when binary-thresholded is itself the baseline the main section already is this one
    rows2 = [r for r in rows if r["arm"] != "binary-thresholded-random"]
    md2 = _report(rows2, tmp_path / "out2")
    assert md2.count("## Paired difference vs binary-thresholded (same seed)") == 1


def _report(rows, out: Path) -> str:
    out.mkdir()
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rr.report(out, out=io.StringIO())
    return (out / "results.md").read_text()


def test_batch4x_arms_train_four_times_the_batch_over_the_same_pairs(tmp_path):
    """``*-batch4x``: the command of the arm without ``batch_scale`` plus overrides (after the
    command line's) giving 4x the batch, 1/4 of the steps, warm-up and dev interval (rounded up)
    and sqrt(4) = 2x the learning rate; the effective config is checked, not the strings."""
    from gcl.config import load_config
    from gcl.training.config import TrainConfig

    plan = rt.make_plan(rt.build_parser().parse_args(["--profile", "full", "--out", str(tmp_path / "o"),
                                                      "--work", str(tmp_path / "w"), "optim.steps=1311"]))
    base = load_config(TrainConfig, str(ROOT / plan.base_config), ["optim.steps=1311"])

    def effective(arm):
        cmd = rt.train_command(plan, arm, 0, tmp_path / arm, False)
        args = cmd[cmd.index("train") + 1:]
        return load_config(TrainConfig, args[0], [a for a in args[1:] if "=" in a])

    for arm, plain in (("gcl-batch4x", "gcl"), ("binary-thresholded-random-batch4x", "binary-thresholded-random")):
        wide, ref = effective(arm), effective(plain)
        assert wide.batch.batch_size == 4 * base.batch.batch_size == 256
        assert wide.optim.steps == 328 and wide.optim.steps * 256 >= ref.optim.steps * 64 > (wide.optim.steps - 1) * 256
        assert wide.optim.warmup_steps == -(-base.optim.warmup_steps // 4)
        assert wide.eval.every == -(-base.eval.every // 4)
        assert wide.optim.lr == pytest.approx(2 * base.optim.lr)
        for section in ("loss", "model", "data"):
            assert getattr(wide, section) == getattr(ref, section)
        assert wide.batch.sampler == ref.batch.sampler
    assert rt.scaled_batch(base, 4)[-1] == "eval.every=55"
    never = load_config(TrainConfig, str(ROOT / plan.base_config), ["eval.every=-1"])
    assert "eval.every=-1" in rt.scaled_batch(never, 4)


def test_a_peer_trained_at_another_batch_does_not_count_for_the_peer_target(tmp_path):
    """The best gcl arm trained at batch 256 and the peer at the base batch: 'ahead everywhere'
    is reported but the target is 'not like for like', not met."""
    rows = [_record("binary-thresholded", s, 0.40, 0.30, 0.50) for s in range(2)]
    rows += [_record("gcl-batch4x", s, 0.45, 0.35, 0.51) for s in range(2)]
    for r in rows:
        if r["arm"] == "gcl-batch4x":
            r["commands"] = ["gcl train configs/x.yaml optim.steps=1311 seed=0 batch.batch_size=256 optim.steps=328"]
    rows += [_record("st-mnrl-thresholded", 0, 0.42, 0.32)]
    line = next(x for x in _report(rows, tmp_path / "a").splitlines() if "every sentence-transformers peer" in x)
    assert "ahead everywhere → **not like for like** (gcl-batch4x trained at batch 256" in line
    assert "**met**" not in line
    # the same batch on both sides (no override recorded for either): the ordinary verdict
    for r in rows:
        r.pop("commands", None)
    line = next(x for x in _report(rows, tmp_path / "b").splitlines() if "every sentence-transformers peer" in x)
    assert "ahead everywhere → **met**" in line


def test_a_peer_at_the_same_batch_is_judged_and_the_others_are_named():
    """gcl-batch4x against an MNRL peer at the same 4x batch: the verdict is on that peer only;
    the base-batch peer is listed as not judged. The 4x peer's command carries the scaled batch."""
    import tempfile

    rows = [_record("binary-thresholded", s, 0.40, 0.30, 0.50) for s in range(2)]
    rows += [_record("gcl-batch4x", s, 0.45, 0.35, 0.51) for s in range(2)]
    rows += [_record("st-mnrl-thresholded", 0, 0.42, 0.32), _record("st-mnrl-thresholded-batch4x", 0, 0.46, 0.36)]
    for r in rows:
        if r["arm"].endswith("batch4x"):
            r["commands"] = ["x train batch.batch_size=256"]
    with tempfile.TemporaryDirectory() as d:
        line = next(x for x in _report(rows, Path(d) / "a").splitlines() if "every sentence-transformers peer" in x)
    assert line.startswith("- gcl-batch4x ≥ every sentence-transformers peer (st-mnrl-thresholded-batch4x)")
    assert "behind on 8" in line and "→ **missed** (peers at another batch than gcl-batch4x's, not judged: " \
        "st-mnrl-thresholded)" in line
    plan = rt.make_plan(rt.build_parser().parse_args(["--profile", "quick", "--out", "o", "--work", "w",
                                                      "optim.steps=1311"]))
    cmd = rt.train_command(plan, "st-mnrl-thresholded-batch4x", 0, Path("r"), False)
    plain = rt.train_command(plan, "st-mnrl-thresholded", 0, Path("r"), False)
    assert cmd[:len(plain)] == plain and cmd[len(plain):] == rt.scaled_batch(rt.load_base(plan), 4)


def test_every_arm_has_a_time_estimate_and_a_place_in_the_report():
    """A new arm must be priced in the printed total and shown by the report (else it silently vanishes)."""
    soups = {a for a in rt.ARMS if rt.ARMS[a].kind == "soup"}
    assert set(rt.EST_MIN_PER_EPOCH) | set(rt.EST_FIXED_MIN) | soups == set(rt.ARMS)
    assert set(rt.EST_FIXED_MIN) == {a for a in rt.ARMS if not rt.ARMS[a].seeded}
    for arm in soups:  # priced by its ingredients, which are arms of their own
        assert all(ing in rt.EST_MIN_PER_EPOCH for ing, _ in rt.ARMS[arm].soup)
    assert set(rr.ORDER) == set(rt.ARMS)
    assert len(rr.ORDER) == len(set(rr.ORDER))
    for arm in rr.ST_PEERS:
        assert rt.ARMS[arm].kind == "st", arm
    for arm in (*rr.BINARY_ARMS, *rr.GCL_ARMS):
        assert rt.ARMS[arm].kind in ("gcl", "soup"), arm


def test_the_expected_time_follows_the_epochs_of_the_plan(tmp_path):
    """The estimate scales with optim.steps x batch (epochs of training pairs), capped by early stopping."""
    def plan(*argv):
        return rt.make_plan(rt.build_parser().parse_args([*argv, "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")]))

    quick = plan("--profile", "quick")
    assert rt.expected_epochs(quick) == pytest.approx(437 * 64 / rt.HOMEDEPOT_EPOCH_PAIRS)
    total = sum(rt.estimate_min(quick, a) for a in quick.arms)
    assert rt.expected_dev_evals(quick) == 1  # eval.every 0: at the end only
    assert total == pytest.approx(sum(rt.EST_SETUP_MIN[rt.ARMS[a].kind] + rt.EST_MIN_PER_EPOCH[a] * 437 * 64 / 27_965
                                      + rt.EST_DEV_EVAL_MIN + rt.EST_EVAL_MIN for a in quick.arms))
    capped = plan("--profile", "full", "optim.steps=1311")  # 3 epochs: under STOP_EPOCHS, so not capped
    assert rt.expected_epochs(capped) == pytest.approx(1311 * 64 / 27_965)
    assert rt.expected_dev_evals(capped) == 1311 // 218 + 1
    gcl3, gcl1 = rt.estimate_min(capped, "gcl"), rt.estimate_min(quick, "gcl")
    assert gcl3 - gcl1 == pytest.approx(rt.EST_MIN_PER_EPOCH["gcl"] * (1311 - 437) * 64 / 27_965
                                        + rt.EST_DEV_EVAL_MIN * (1311 // 218))
    assert rt.expected_dev_evals(plan("--profile", "full", "eval.every=-1")) == 0
    # a batch4x arm draws the same pairs in fewer steps: the same epochs
    assert rt.estimate_min(capped, "gcl-batch4x") < gcl3
    no_stop = plan("--profile", "full", "eval.patience=0")  # the whole 8-epoch budget
    assert rt.expected_epochs(no_stop) == pytest.approx(3496 * 64 / 27_965)
    assert rt.estimate_min(plan("--profile", "full"), "bm25") == rt.EST_FIXED_MIN["bm25"]
    # a peer that stops at its own measured length: MNRL runs 6 epochs (2,621 steps of 64), CoSENT 3.16;
    # a batch4x arm its base arm's
    full = plan("--profile", "full")
    for arm, epochs, evals in (("st-mnrl-thresholded", 6.0, 2621 // 218 + 1), ("st-cosent", 3.16, 1380 // 218 + 1),
                               ("st-mnrl-all-batch4x", 6.0, 2621 // 218 + 1),  # 4x: steps and interval both / 4
                               ("gcl", rt.STOP_EPOCHS, 2141 // 218 + 1)):
        assert rt.expected_epochs(full, arm) == pytest.approx(epochs)
        assert rt.expected_dev_evals(full, arm) == evals
        assert rt.estimate_min(full, arm) == pytest.approx(
            rt.EST_SETUP_MIN[rt.ARMS[arm].kind] + rt.EST_MIN_PER_EPOCH[arm] * epochs + rt.EST_DEV_EVAL_MIN * evals
            + rt.EST_EVAL_MIN)
    assert rt.expected_epochs(no_stop, "st-mnrl-thresholded") == pytest.approx(3496 * 64 / 27_965)  # no early stop: the budget
    assert rt.expected_epochs(capped, "st-mnrl-thresholded") == pytest.approx(1311 * 64 / 27_965)  # under its length
    # the quick profile's one epoch reaches every trained arm, and the command line still overrides it
    for p_, steps in ((quick, 437), (plan("--profile", "quick", "optim.steps=1311"), 1311)):
        assert rt.load_base(p_).optim.steps == steps and rt.load_base(p_).eval.every == 0
        cmd = rt.train_command(p_, "st-cosent", 0, tmp_path / "r", False)
        assert cmd.index("optim.steps=437") < cmd.index(f"optim.steps={steps}") if steps != 437 else "optim.steps=437" in cmd


def test_the_epoch3_profile_is_the_full_profile_capped_at_three_epochs(tmp_path):
    """`--profile epoch3` (docs/results/table_quick in one command) trains exactly what
    `--profile full optim.steps=1311` trains: same arms, seeds and commands; 4x arms a quarter of the steps."""
    def plan(*argv):
        return rt.make_plan(rt.build_parser().parse_args([*argv, "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")]))

    e3, full = plan("--profile", "epoch3"), plan("--profile", "full", "optim.steps=1311")
    assert e3.runs() == full.runs() and set(a for a, _ in e3.runs()) == set(rt.ARMS)
    for arm, seed in e3.runs():
        if rt.ARMS[arm].seeded:
            run_dir = rt.run_directory(e3, arm, seed)
            assert rt.train_command(e3, arm, seed, run_dir, False) == rt.train_command(full, arm, seed, run_dir, False)
    cmd = rt.train_command(e3, "gcl-batch4x", 0, tmp_path / "r", False)
    assert [c for c in cmd if c.startswith("optim.steps=")][-1] == "optim.steps=328"  # the last one wins
    assert rt.expected_epochs(e3) == pytest.approx(1311 * 64 / 27_965)
    assert rt.estimate_min(e3, "gcl") == rt.estimate_min(full, "gcl")


def test_the_fullft_profile_is_the_full_profile_with_no_frozen_layers_and_its_own_time(tmp_path, monkeypatch):
    """`--profile fullft` trains the full profile's commands for the gcl-trained arms with every layer
    trained and nothing cached, and prices them at its measured rates: no frozen-layer store to fill."""
    def plan(*argv):
        return rt.make_plan(rt.build_parser().parse_args([*argv, "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")]))

    ft, full = plan("--profile", "fullft"), plan("--profile", "full")
    assert {a for a, _ in ft.runs()} == {"binary-thresholded", "gcl", "binary-thresholded-random", "gcl-best"}
    assert ft.seeds == (0, 1, 2)
    cfg = rt.load_base(ft)
    assert cfg.model.freeze_layers == 0 and cfg.model.cache_frozen is False
    assert rt.load_base(full).model.freeze_layers == 4
    for arm, seed in ft.runs():
        run_dir = rt.run_directory(ft, arm, seed)
        cmd, base = rt.train_command(ft, arm, seed, run_dir, False), rt.train_command(full, arm, seed, run_dir, False)
        assert [c for c in cmd if c not in ("model.freeze_layers=0", "model.cache_frozen=false")] == base
    # the command line still wins over the profile (a later override)
    cmd = rt.train_command(plan("--profile", "fullft", "model.freeze_layers=2"), "gcl", 0, tmp_path / "r", False)
    assert cmd.index("model.freeze_layers=0") < cmd.index("model.freeze_layers=2")
    epochs, evals = rt.expected_epochs(ft, "gcl"), rt.expected_dev_evals(ft, "gcl")
    assert epochs == rt.STOP_EPOCHS and evals == 10
    by_hand = rt.EST_SETUP_MIN["gcl"] + 2.35 * 4.55 * epochs + 0.9 * evals + 7.0
    assert rt.estimate_min(ft, "gcl") == pytest.approx(by_hand) == pytest.approx(68.9, abs=0.05)
    assert rt.estimate_min(full, "gcl") < by_hand / 3  # the cached table is unchanged
    # the rates follow the config, not the profile's name: the full profile with every layer trained costs the same
    same = plan("--profile", "full", "model.freeze_layers=0", "model.cache_frozen=false")
    assert rt.estimate_min(same, "gcl") == pytest.approx(by_hand)
    (tmp_path / "o").mkdir()

    class Stop(Exception):
        pass

    def stop(*_):
        raise Stop

    monkeypatch.setattr(rt, "run_one", stop)
    one = plan("--profile", "fullft", "--arms", "gcl", "--seeds", "1")
    done_dir = rt.run_directory(one, "gcl", 1)
    buf = io.StringIO()
    with pytest.raises(Stop):
        rt.run(one, out=buf)
    assert buf.getvalue().startswith(f"expected total time: {by_hand:.0f} min")  # no EST_COLD_MIN
    done_dir.mkdir(parents=True)
    (done_dir / "train_done.json").write_text(json.dumps({"seconds": 1.0, "command": "gcl train ..."}))
    buf = io.StringIO()
    with pytest.raises(Stop):
        rt.run(one, out=buf)
    assert buf.getvalue().startswith("expected total time: 7 min")  # its evaluation only


def test_convergence_counts_the_dev_evaluations_after_the_pick():
    """Hand-counted: budget 1311, every 218 -> evaluations at 218..1308 and 1311; patience 3 (the config's)."""
    assert rr.evals_after(872, 1311, 218) == 3 and rr.evals_after(1090, 1311, 218) == 2
    assert rr.evals_after(1308, 1311, 218) == 1 and rr.evals_after(1311, 1311, 218) == 0
    assert rr.evals_after(110, 328, 55) == 4  # 165, 220, 275, 328
    assert rr.evals_after(0, 330, 55) == 6  # the last step is an evaluation already: not counted twice

    def rec(seed, step, cmd):
        return {"arm": "gcl", "seed": seed, "dev": {"metric": "ndcg@10", "value": 0.5, "step": step}, "commands": [cmd]}

    capped = "gcl train configs/homedepot_gcl_fast.yaml optim.steps=1311 seed=0 out_dir=x"
    full = "gcl train configs/homedepot_gcl_fast.yaml seed=0 out_dir=x"  # the config's 3496 steps, every 218
    assert rr.train_setting(rec(0, 1, capped), "optim.steps") == 1311
    assert rr.train_setting(rec(0, 1, full), "optim.steps") == 3496
    assert rr.train_setting(rec(0, 1, full), "eval.patience") == 3
    assert rr.train_setting(rec(0, 1, "gcl train optim.steps=5 optim.steps=7"), "optim.steps") == 7  # last wins
    assert rr.train_setting({"arm": "gcl", "seed": 0}, "optim.steps") is None
    st = "python experiments/st_peers.py --arm cosent --config configs/homedepot_gcl_fast.yaml --seed 0 --out x"
    assert rr.train_setting(rec(0, 1, st), "eval.every") == 218
    arms = {"gcl": [rec(0, 872, capped), rec(1, 1090, capped), rec(2, 1308, full)]}
    row = rr.convergence(arms)[-2]
    # s0: 3 evaluations after 872 -> converged; s1: 2 -> not; s2 in the 3496-step budget: 1526.. -> converged
    assert row == "| gcl | 3 | 1311/3496 | s0: 872, s1: 1090, s2: 1308 | 2/3 |"
    budget = "gcl train configs/homedepot_gcl_fast.yaml eval.patience=0 eval.keep_best=false seed=0 out_dir=x"
    row = rr.convergence({"gcl": [rec(0, 3496, budget)]})[-2]  # no early stopping: no verdict, not "0/1"
    assert row == "| gcl | 1 | 3496 | s0: 3496 | — (no early stopping: the whole budget, final model) |"


def test_dev_at_equal_steps_differences_hand_computed():
    """Two seeds, curves by hand: gcl - binary-thresholded at each common step; a 4x arm is compared
    with the 4x binary arm only; a step one run lacks is left out."""
    def rec(arm, seed, curve, batch=None):
        cmd = "gcl train configs/homedepot_gcl_fast.yaml" + (f" batch.batch_size={batch}" if batch else "")
        best = max(curve, key=lambda c: c[1])
        return {"arm": arm, "seed": seed, "commands": [cmd],
                "dev": {"metric": "ndcg@10", "value": best[1], "step": best[0],
                        "curve": [{"step": t, "ndcg@10": n, "err": e} for t, n, e in curve]}}

    arms = {
        "binary-thresholded": [rec("binary-thresholded", 0, [(10, 0.50, 0.40), (20, 0.52, 0.41)]),
                               rec("binary-thresholded", 1, [(10, 0.51, 0.40), (20, 0.50, 0.42)])],
        "gcl": [rec("gcl", 0, [(10, 0.49, 0.43), (20, 0.55, 0.44), (30, 0.9, 0.9)]),
                rec("gcl", 1, [(10, 0.53, 0.39)])],  # seed 1 stopped at step 10
        "gcl-batch4x": [rec("gcl-batch4x", 0, [(10, 0.7, 0.7)], batch=256)],
        "binary-thresholded-random-batch4x": [rec("binary-thresholded-random-batch4x", 0, [(10, 0.6, 0.8)], batch=256)],
    }
    lines = rr.equal_steps(arms)
    text = "\n".join(lines)
    assert text.count("## Dev at equal steps") == 2
    rows = [x for x in lines if x.startswith("| gcl |")]
    # ndcg: step 10: (-0.01, +0.02) -> +0.005, 1 of 2 ahead; step 20: +0.03 (1/1); step 30: binary never there
    assert rows[0] == "| gcl | +0.0050 (1/2) | +0.0300 (1/1) | 2/3 |"
    # err: step 10: (+0.03, -0.01) -> +0.01 (1/2); step 20: +0.03 (1/1)
    assert rows[1] == "| gcl | +0.0100 (1/2) | +0.0300 (1/1) | 2/3 |"
    four = [x for x in lines if x.startswith("| gcl-batch4x |")]
    assert four == ["| gcl-batch4x | +0.1000 (1/1) | 1/1 |", "| gcl-batch4x | -0.1000 (0/1) | 0/1 |"]
    assert rr.equal_steps({"gcl": arms["gcl"]}) == []  # no binary arm: nothing to compare with
    for runs in arms.values():
        for r in runs:
            del r["dev"]["curve"]
    assert rr.equal_steps(arms) == []  # records written before the curve was kept


def test_gcl_best_config_is_the_loss_search_arm_it_names():
    """configs/homedepot_gcl_best.yaml trains exactly what the loss search's chosen arm
    (``gcl-random``, docs/results.md §1c) trained on top of the base config: every key equal but
    ``out_dir``, so the table's gcl-best rows are the configuration the dev rule picked."""
    from dataclasses import replace

    import loss_search as ls

    from gcl.config import load_config
    from gcl.training.config import TrainConfig

    best = load_config(TrainConfig, str(ROOT / rt.BEST_CONFIG))
    chosen = load_config(TrainConfig, str(ROOT / ls.BASE), ls.ARMS["gcl-random"])
    assert best.batch.sampler == "random" and chosen.batch.sampler == "random"
    assert replace(best, out_dir="x") == replace(chosen, out_dir="x")
    # and it is not the base config (the paper's GCL with query groups) under another name
    base = load_config(TrainConfig, str(ROOT / ls.BASE))
    assert replace(base, out_dir="x") != replace(best, out_dir="x")


def test_loss_search_arms_load_and_train_equal_epochs():
    """Every loss-search arm is a valid config on top of the base one, and an arm at another batch
    size gets the steps (and dev evaluations) of the same number of epochs, not of the same number
    of steps: 2 epochs of 5,252 pairs are 164 steps of 64 but 82 of 128."""
    import loss_search as ls

    from gcl.config import load_config
    from gcl.training.config import TrainConfig

    for arm, overrides in ls.ARMS.items():
        cfg = load_config(TrainConfig, str(ROOT / ls.BASE), overrides)
        steps, every = ls.arm_steps(2, 4, 5252, cfg.batch.batch_size)
        assert steps * cfg.batch.batch_size == pytest.approx(2 * 5252, abs=cfg.batch.batch_size), arm
        assert every == steps // 4, arm
    g2 = load_config(TrainConfig, str(ROOT / ls.BASE), ls.ARMS["gcl-group2-b128"])
    assert ls.arm_steps(2, 4, 5252, 64) == (164, 41)
    assert ls.arm_steps(2, 4, 5252, g2.batch.batch_size) == (82, 20)
    b2 = load_config(TrainConfig, str(ROOT / ls.BASE), ls.ARMS["binary-thresholded-group2-b128"])
    assert (g2.batch.batch_size, g2.batch.docs_per_query, g2.batch.sampler) == (128, 2, b2.batch.sampler)
    assert (g2.loss.same_query, b2.loss.same_query) == ("lower", "mask")


def test_per_query_archive_keeps_the_paired_test_when_the_evaluation_directory_is_gone(tmp_path):
    """The archive beside runs.jsonl gives the report the same per-query figures, hence the same p,
    as the gcl evaluate outputs it was written from; query ids that look like NaN stay strings."""
    rng = np.random.default_rng(1)
    queries = ["NA", "null", "q 1", "0012", *[f"q{i}" for i in range(26)]]
    runs = {"a": [], "b": []}
    for arm in runs:
        for seed in range(2):
            d = tmp_path / arm / str(seed)
            d.mkdir(parents=True)
            for s in SPLITS:
                pd.DataFrame({"query_id": queries, "ndcg@10": rng.random(30), "map@1000": rng.random(30),
                              "err": rng.random(30)}).to_csv(d / f"{s}_per_query.csv", index=False)
            archive = tmp_path / "out" / "per_query" / f"{arm}-s{seed}.csv.gz"
            rr.archive_per_query(d, archive)
            runs[arm].append({"arm": arm, "seed": seed, "eval_dir": str(d), "per_query": str(archive)})
    first = Path(runs["a"][0]["per_query"]).read_bytes()
    rr.archive_per_query(tmp_path / "a" / "0", tmp_path / "again.csv.gz")
    assert (tmp_path / "again.csv.gz").read_bytes() == first  # no timestamp: equal inputs, equal bytes
    archived = pd.read_csv(runs["a"][0]["per_query"], dtype={"query_id": str}, keep_default_na=False)
    assert list(archived.columns) == ["split", "query_id", "ndcg@10", "err"] and len(archived) == 30 * len(SPLITS)
    for split in SPLITS:
        for metric in rr.PAIRED:
            live = rr.significance(runs["a"], runs["b"], split, metric)
            mean_live = rr.per_query_mean(runs["a"], split, metric)
            gone = {k: [{**r, "eval_dir": str(tmp_path / "deleted")} for r in v] for k, v in runs.items()}
            kept = rr.significance(gone["a"], gone["b"], split, metric)
            assert kept is not None and (kept.p_value, kept.ci_low, kept.ci_high) == (live.p_value, live.ci_low, live.ci_high)
            mean_kept = rr.per_query_mean(gone["a"], split, metric)
            assert set(mean_kept.index) == set(queries)
            assert mean_kept.loc[mean_live.index].tolist() == mean_live.tolist()  # exact round trip
    nothing = [{**r, "eval_dir": str(tmp_path / "deleted"), "per_query": str(tmp_path / "none.csv.gz")} for r in runs["a"]]
    assert rr.per_query_mean(nothing, "in_domain", "err") is None
    assert rr.per_query_mean(gone["a"], "in_domain", "map@1000") is None  # not archived: no test, not a crash


def test_the_report_finds_archives_from_any_directory_prefers_them_and_survives_a_corrupt_one(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(2)
    queries = [f"q{i}" for i in range(20)]
    out = tmp_path / "table"
    rows = []
    for arm in ("binary-thresholded", "gcl"):
        for seed in range(2):
            d = tmp_path / "work" / f"{arm}-s{seed}" / "eval"
            d.mkdir(parents=True)
            for s in SPLITS:
                pd.DataFrame({"query_id": queries, "ndcg@10": rng.random(20), "err": rng.random(20)}).to_csv(
                    d / f"{s}_per_query.csv", index=False)
            rr.archive_per_query(d, out / "per_query" / f"{arm}-s{seed}.csv.gz")
            rows.append({**_record(arm, seed, 0.4, 0.3, 0.5 if arm == "gcl" else 0.6, d),
                         "per_query": f"per_query/{arm}-s{seed}.csv.gz"})
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = rr.by_arm(rr.read_runs(out / "runs.jsonl"))
    ref = rr.significance(runs["gcl"], runs["binary-thresholded"], "zero_shot", "err")
    # the work directory is overwritten by a later table: the archive (the record's own figures) wins
    for s in SPLITS:
        pd.DataFrame({"query_id": queries, "ndcg@10": 0.0, "err": 0.0}).to_csv(
            tmp_path / "work" / "gcl-s0" / "eval" / f"{s}_per_query.csv", index=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rr.report(out, out=io.StringIO())
    md = (out / "results.md").read_text()
    assert f"p = {ref.p_value:.3f} [{ref.ci_low:+.4f}, {ref.ci_high:+.4f}]" in md
    # a cut archive: a warning naming it, the report still written, that arm's cells without p
    (out / "per_query" / "gcl-s1.csv.gz").write_bytes((out / "per_query" / "gcl-s1.csv.gz").read_bytes()[:40])
    shutil.rmtree(tmp_path / "work" / "gcl-s1")
    rr.report(out, out=io.StringIO())
    assert "gcl-s1.csv.gz: unreadable per-query archive" in capsys.readouterr().err
    row = next(x for x in (out / "results.md").read_text().split("## Paired difference")[1].splitlines()
               if x.startswith("| gcl |"))
    assert "p = " not in row


def test_the_budget_profile_trains_every_arm_for_the_whole_budget_and_evaluates_the_final_model(tmp_path):
    """`--profile budget`: the full profile's commands with early stopping off, no best model kept and dev
    scored once an epoch; the final model is evaluated even beside a stale best/; priced at the whole
    8 epochs (hand-computed: 3,496 steps x 64 pairs / 27,965 = 8.0 epochs, 9 dev evaluations)."""
    def plan(*argv):
        return rt.make_plan(rt.build_parser().parse_args([*argv, "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")]))

    bud, full = plan("--profile", "budget"), plan("--profile", "full")
    assert {a for a, _ in bud.runs()} == {"binary-thresholded", "gcl", "binary-thresholded-random", "gcl-best",
                                          "gcl-soup"}
    extra = ("eval.patience=0", "eval.keep_best=false", "eval.every=437")
    # the soup of the budget's own final models: 0.75 x gcl + 0.25 x gcl-best of the same seed
    cmd = rt.soup_command(bud, "gcl-soup", 1, rt.run_directory(bud, "gcl-soup", 1))
    w = tmp_path / "w"
    assert cmd[3:] == ["soup", str(w / "gcl-s1" / "final"), str(w / "gcl-best-s1" / "final"), "--weights", "0.75",
                       "0.25", "--out", str(w / "gcl-soup-s1" / "final")]
    # priced as the soup and its evaluation: its ingredients are arms of the plan, priced there
    assert rt.estimate_min(bud, "gcl-soup") == pytest.approx(rt.EST_SOUP_MIN + 1.7)
    alone = plan("--profile", "budget", "--arms", "gcl-soup")
    assert rt.estimate_min(alone, "gcl-soup") == pytest.approx(rt.EST_SOUP_MIN + 1.7 + 2 * (rt.estimate_min(bud, "gcl") - 1.7))
    for arm, seed in bud.runs():
        if rt.ARMS[arm].kind == "soup":
            continue
        run_dir = rt.run_directory(bud, arm, seed)
        cmd = rt.train_command(bud, arm, seed, run_dir, False)
        assert [c for c in cmd if c not in extra] == rt.train_command(full, arm, seed, run_dir, False)
        assert all(e in cmd for e in extra)
    cfg = rt.load_base(bud)
    assert cfg.eval.patience == 0 and cfg.eval.keep_best is False and cfg.eval.every == 437
    epochs, evals = rt.expected_epochs(bud, "gcl"), rt.expected_dev_evals(bud, "gcl")
    assert epochs == pytest.approx(3496 * 64 / 27_965) and evals == 8  # 437, 874, ..., 3496 = 8 x 437: the last is one
    assert rt.estimate_min(bud, "gcl") == pytest.approx(0.5 + 2.35 * epochs + 0.45 * 8 + 1.7)
    run_dir = tmp_path / "w" / "gcl-s0"
    (run_dir / "best").mkdir(parents=True)
    (run_dir / "best" / "gcl_model.json").write_text("{}")  # a stale best model from another profile
    assert rt.model_dir("gcl", run_dir, bud) == str(run_dir / "final")
    assert rt.model_dir("gcl", run_dir, full) == str(run_dir / "best")
    for cmd in rt.eval_commands(bud, "gcl", run_dir).values():
        assert cmd[cmd.index("--model") + 1] == str(run_dir / "final")
    # once trained, the run's own config.json decides (an arm with its own config file, overrides and all)
    (run_dir / "config.json").write_text(json.dumps({"eval": {"keep_best": False, "metric": "ndcg@10"}}))
    assert rt.model_dir("gcl", run_dir, full) == str(run_dir / "final")
    # its record's dev figure is the final model's (the last evaluation), not the best one
    rows = [{"step": 437, "dev/ndcg@10": 0.52, "dev/err": 0.45}, {"step": 874, "dev/ndcg@10": 0.50, "dev/err": 0.44},
            {"step": 900, "train/loss": 1.0}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dev = rt.dev_metric("gcl", run_dir)
    assert (dev["value"], dev["step"], dev["model"]) == (0.50, 874, "final") and len(dev["curve"]) == 2
    (run_dir / "config.json").write_text(json.dumps({"eval": {"keep_best": True, "metric": "ndcg@10"}}))
    assert (rt.dev_metric("gcl", run_dir)["value"], rt.dev_metric("gcl", run_dir)["step"]) == (0.52, 437)
    assert "model" not in rt.dev_metric("gcl", run_dir)


def test_a_table_with_finished_runs_prices_the_rest_by_what_they_took(tmp_path, monkeypatch):
    """The constants were measured on one day of the VM; a table prices an arm by the median of its own
    finished runs trained by the same recipe (recorded command equal but for seed and directory), and
    at a fixed budget (no early stopping) an arm it has not run by the median of every base-config
    gcl arm of its batch scale; other profiles, overrides, resumed runs, peers and soups do not count."""
    out = tmp_path / "o"
    out.mkdir()

    def plan(*argv):
        return rt.make_plan(rt.build_parser().parse_args([*argv, "--out", str(out), "--work", str(tmp_path / "w")]))

    made = {"budget": plan("--profile", "budget"), "full": plan("--profile", "full"),
            "steps": plan("--profile", "budget", "optim.steps=10")}

    def rec(arm, seed, minutes, made_by="budget", resumed=False):
        p = made[made_by]
        cmd = rt.shown(rt.train_command(p, arm, seed, tmp_path / "elsewhere" / f"{arm}-{seed}", resumed))
        return {"arm": arm, "seed": seed, "profile": p.profile, "seconds": 60 * minutes, "commands": [cmd, "gcl evaluate"]}

    rows = [rec("gcl", 0, 40), rec("gcl", 1, 46), rec("gcl", 2, 41),  # median 41
            rec("binary-thresholded", 0, 38), rec("binary-thresholded", 1, 50),
            rec("binary-thresholded", 2, 3, resumed=True),  # resumed: its seconds are the last part only
            rec("gcl", 3, 5, made_by="full"),  # another profile
            rec("gcl", 4, 5, made_by="steps"),  # other command-line overrides
            rec("gcl-best", 0, 90),  # its own config: counts for itself only
            rec("st-cosent", 0, 14), {"arm": "bm25", "seed": 0, "seconds": 480.0, "commands": ["gcl evaluate --bm25"]},
            {"arm": "gcl-soup", "seed": 0, "seconds": 5400.0, "commands": ["gcl soup"]}]
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"arm": "gcl", "seed": 9, "sec')
    bud = plan("--profile", "budget", "--arms", "gcl,gcl-reciprocal,gcl-batch4x,st-mnrl-all,gcl-best", "--seeds", "5")
    measured = rt.measured_minutes(bud, rt.read_records(out / "runs.jsonl"))
    assert rt.estimate_min(bud, "gcl", 5, measured) == pytest.approx(41.0)
    assert rt.estimate_min(bud, "gcl-best", 5, measured) == pytest.approx(90.0)
    # an arm not run yet: every base-config gcl run of batch scale 1 at this fixed budget (40, 46, 41, 38, 50)
    assert rt.estimate_min(bud, "gcl-reciprocal", 5, measured) == pytest.approx(statistics.median([40, 46, 41, 38, 50]))
    # a batch4x arm and a peer of another kind stay on the constants
    for arm in ("gcl-batch4x", "st-mnrl-all"):
        assert rt.estimate_min(bud, arm, 5, measured) == pytest.approx(rt.estimate_min(bud, arm, 5))
    # the soup is priced by its formula, its ingredients by what they took
    assert rt.estimate_min(plan("--profile", "budget", "--arms", "gcl-soup"), "gcl-soup", 5, measured) == pytest.approx(
        rt.EST_SOUP_MIN + rt.EST_EVAL_MIN + (41.0 - rt.EST_EVAL_MIN) + (90.0 - rt.EST_EVAL_MIN))  # gcl, gcl-best
    buf = io.StringIO()
    rt.run(bud, out=buf, dry_run=True)
    first = buf.getvalue().splitlines()[0]
    assert "gcl 41.0 (median of 3 runs of it in this table)" in first
    assert "gcl-reciprocal 41.0 (median of 5 gcl runs in this table, same fixed budget)" in first
    # the other profile's and the other overrides' runs price their own plans
    assert rt.measured_minutes(made["full"], rows)["gcl"] == (5.0, 1)
    assert rt.measured_minutes(made["steps"], rows)["gcl"] == (5.0, 1)
    # with early stopping each arm stops at its own length: only an arm's own runs count
    full = made["full"]
    measured = rt.measured_minutes(full, [rec("gcl", 0, 20, made_by="full"), rec("gcl", 1, 30, made_by="full")])
    assert rt.estimate_min(full, "gcl", 5, measured) == pytest.approx(25.0)
    assert rt.estimate_min(full, "gcl-reciprocal", 5, measured) == pytest.approx(rt.estimate_min(full, "gcl-reciprocal", 5))


def test_a_finished_training_from_another_command_is_kept_with_a_warning(tmp_path, capsys):
    """A run directory whose train_done.json records another command (a model trained elsewhere and
    placed there, or another profile's directory) is not retrained, and the difference is said."""
    def plan(*argv):
        return rt.make_plan(rt.build_parser().parse_args([*argv, "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")]))

    bud = plan("--profile", "budget")
    run_dir = rt.run_directory(bud, "gcl", 0)
    run_dir.mkdir(parents=True)
    mine = rt.shown(rt.train_command(bud, "gcl", 0, run_dir, False))
    (run_dir / "train_done.json").write_text(json.dumps({"seconds": 12.0, "command": mine}))
    assert rt.train(bud, "gcl", 0, run_dir) == (12.0, None)
    assert capsys.readouterr().err == ""
    other = rt.shown(rt.train_command(plan("--profile", "full"), "gcl", 0, run_dir, False))
    (run_dir / "train_done.json").write_text(json.dumps({"seconds": 7.0, "command": other}))
    assert rt.train(bud, "gcl", 0, run_dir) == (7.0, None)
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {run_dir}: trained by another command") and "eval.keep_best=false" in err


def _per_query_dir(d: Path, rng, queries) -> dict:
    d.mkdir(parents=True)
    frames = {}
    for s in SPLITS:
        frame = pd.DataFrame({"query_id": queries, "ndcg@10": rng.random(len(queries)), "err": rng.random(len(queries))})
        frame.to_csv(d / f"{s}_per_query.csv", index=False)
        frames[s] = frame.set_index("query_id")
    return frames


def test_the_best_gcl_arm_is_tested_against_each_peer_over_queries(tmp_path):
    """The peer section's cell is ``best − peer`` with the sign-flip test of a naive seed average;
    the target line names the p of each cell where the best arm is behind and counts those below 0.05."""
    from gcl.evaluation.compare import paired_compare

    rng = np.random.default_rng(1)
    queries = [f"q{i}" for i in range(40)]
    pq, rows = {}, []
    for arm, nd, er in (("binary-thresholded", 0.40, 0.30), ("gcl-best", 0.45, 0.35), ("st-cached-mnrl", 0.46, 0.34)):
        for seed in range(2):
            d = tmp_path / arm / str(seed)
            pq[(arm, seed)] = _per_query_dir(d, rng, queries)
            rows.append(_record(arm, seed, nd + seed / 1000, er, 0.5, d))
    md = _report(rows, tmp_path / "out")
    section = md.split("## gcl-best against each sentence-transformers peer")[1].split("\n## ")[0]
    err_row = next(x for x in section.split("### err")[1].splitlines() if x.startswith("| st-cached-mnrl |"))
    avg = {a: sum(pq[(a, s)]["novel_query"]["err"] for s in range(2)) / 2 for a in ("gcl-best", "st-cached-mnrl")}
    ref = paired_compare(avg["st-cached-mnrl"].to_numpy(), avg["gcl-best"].to_numpy())
    cell = err_row.split(" | ")[2]
    assert cell.startswith("+0.0100 ± 0.0000 (+2.9%) 2/2") and f"p = {ref.p_value:.3f}" in cell
    nd_ref = paired_compare(sum(pq[("st-cached-mnrl", s)]["in_domain"]["ndcg@10"] for s in range(2)).to_numpy() / 2,
                            sum(pq[("gcl-best", s)]["in_domain"]["ndcg@10"] for s in range(2)).to_numpy() / 2)
    target = next(x for x in md.splitlines() if "every sentence-transformers peer" in x)
    assert f"behind on 4: st-cached-mnrl in_domain ndcg@10 (p {nd_ref.p_value:.3f})" in target
    assert "tested behind at p < 0.05" in target and "→ **missed**" in target


def _repro_tables(tmp_path, drift: float):
    rng = np.random.default_rng(2)
    table, repro = tmp_path / "table", tmp_path / "repro"
    rows = [_record("gcl-best", s, 0.45, 0.35, 0.5) for s in range(2)]
    for r in rows:
        r["commands"] = [f"gcl train x seed={r['seed']}"]  # a field adoption must keep as it is
    twins = [json.loads(json.dumps(r)) for r in rows]
    twins[1]["splits"]["zero_shot"]["err"] += drift
    for t in twins:
        arch = repro / "per_query" / f"gcl-best-s{t['seed']}.csv.gz"
        _per_query_dir(tmp_path / f"eval{t['seed']}", rng, ["a", "b"])
        rr.archive_per_query(tmp_path / f"eval{t['seed']}", arch)
        t["per_query"] = str(arch.relative_to(repro))
    for d, recs in ((table, rows), (repro, twins)):
        d.mkdir(exist_ok=True)
        (d / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return table, repro


def _adopt(table, repro) -> tuple[int, list[str]]:
    buf = io.StringIO()
    rc = rt.main(["--out", str(table), "--adopt-per-query", str(repro)], out=buf)
    return rc, buf.getvalue().splitlines()


def _table(table) -> list[dict]:
    return [json.loads(x) for x in (table / "runs.jsonl").read_text().splitlines()]


def test_a_reproduction_gives_its_per_query_archive_only_to_the_identical_run(tmp_path):
    table, repro = _repro_tables(tmp_path, drift=1e-4)
    original = _table(table)
    rc, out = _adopt(table, repro)
    assert rc == 1
    assert out == ["adopted: gcl-best seed 0 (largest difference 0)",
                   "not adopted: gcl-best seed 1: the reproduction differs (splits/zero_shot/err: 0.0001)"]
    recs = _table(table)
    assert recs[0]["per_query"] == "per_query/gcl-best-s0.csv.gz" and recs[1] == original[1]
    assert recs[0]["per_query_from"]["max_abs_difference"] == 0.0
    assert {k: v for k, v in recs[0].items() if k not in ("per_query", "per_query_from")} == original[0]
    assert (table / "per_query" / "gcl-best-s0.csv.gz").read_bytes() == (repro / "per_query" / "gcl-best-s0.csv.gz").read_bytes()
    assert not (table / "per_query" / "gcl-best-s1.csv.gz").exists()
    # the archive is read by the report for that run; a second adoption changes nothing
    assert rr.per_query_mean(rr.read_runs(table / "runs.jsonl")[:1], "in_domain", "err") is not None
    before = (table / "runs.jsonl").read_bytes()
    assert _adopt(table, repro)[0] == 1
    assert (table / "runs.jsonl").read_bytes() == before


def _edit(path: Path, change) -> None:
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    change(recs)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


@pytest.mark.parametrize("change, why", [
    (lambda t: t[0]["dev"].update(step=20), "dev step 10 vs 20: inf"),
    (lambda t: t[0]["splits"]["in_domain"].update({"ndcg@10": float("nan")}), "splits/in_domain/ndcg@10: inf"),
    (lambda t: t[0].update(thresholded={"in_domain": {"err": 0.3}}), "thresholded/in_domain/err: inf"),
    (lambda t: t[0]["splits"].pop("novel_corpus"), "splits/novel_corpus/err: inf"),
])
def test_adoption_refuses_a_reproduction_that_differs_in_any_recorded_figure(tmp_path, change, why):
    """A NaN against a number, a section or split on one side only, another dev step: not the same run."""
    table, repro = _repro_tables(tmp_path, drift=0.0)
    _edit(repro / "runs.jsonl", change)
    rc, out = _adopt(table, repro)
    assert rc == 1 and f"not adopted: gcl-best seed 0: the reproduction differs ({why})" in out
    assert "adopted: gcl-best seed 1 (largest difference 0)" in out
    assert "per_query" not in _table(table)[0] and _table(table)[1]["per_query"] == "per_query/gcl-best-s1.csv.gz"


def test_two_nans_agree_and_an_archive_with_other_bytes_is_never_overwritten(tmp_path):
    table, repro = _repro_tables(tmp_path, drift=0.0)
    for path in (table / "runs.jsonl", repro / "runs.jsonl"):
        _edit(path, lambda t: t[0]["splits"]["in_domain"].update({"ndcg@10": float("nan")}))
    (table / "per_query").mkdir()
    (table / "per_query" / "gcl-best-s1.csv.gz").write_bytes(b"another run's archive")
    rc, out = _adopt(table, repro)
    assert rc == 1 and out[0] == "adopted: gcl-best seed 0 (largest difference 0)"
    assert out[1] == f"not adopted: gcl-best seed 1: {table / 'per_query' / 'gcl-best-s1.csv.gz'} exists with other contents"
    assert (table / "per_query" / "gcl-best-s1.csv.gz").read_bytes() == b"another run's archive"


def test_adoption_with_broken_or_missing_inputs_is_a_clear_error(tmp_path, capsys):
    table, repro = _repro_tables(tmp_path, drift=0.0)
    (repro / "per_query" / "gcl-best-s0.csv.gz").unlink()
    assert _adopt(table, repro)[0] == 2
    assert "gcl-best-s0.csv.gz: the reproduction's per-query archive is missing" in capsys.readouterr().err
    assert "per_query" not in _table(table)[0]
    (table / "runs.jsonl").write_text((table / "runs.jsonl").read_text() + '{"arm": "gc')
    assert _adopt(table, repro)[0] == 2
    assert "runs.jsonl, line 3: not a run record" in capsys.readouterr().err
    assert _adopt(tmp_path / "nowhere", repro)[0] == 2
    assert "nowhere/runs.jsonl: no such file" in capsys.readouterr().err
    table2, _ = _repro_tables(tmp_path / "b", drift=0.0)
    assert _adopt(table2, tmp_path / "no_repro")[0] == 2
    assert "no_repro/runs.jsonl: no such file" in capsys.readouterr().err


def test_only_a_significant_deficit_counts_as_behind_at_p_005(tmp_path):
    """The record means put gcl-best behind the peer on every split's nDCG@10; over queries it is far
    behind on in_domain and far *ahead* on novel_query (a lead, however significant, is not a
    deficit), and level elsewhere."""
    rng = np.random.default_rng(3)
    queries = [f"q{i}" for i in range(60)]
    base = rng.random(60)
    shift = {"in_domain": -0.3, "novel_query": +0.3, "novel_corpus": 0.0, "zero_shot": 0.0}
    rows = []
    for arm, nd in (("binary-thresholded", 0.40), ("gcl-best", 0.45), ("st-cached-mnrl", 0.46)):
        for seed in range(2):
            d = tmp_path / arm / str(seed)
            d.mkdir(parents=True)
            for s in SPLITS:
                v = base + (shift[s] if arm == "gcl-best" else 0.0) + (rng.normal(0, 0.01, 60) if s in ("novel_corpus", "zero_shot") else 0)
                pd.DataFrame({"query_id": queries, "ndcg@10": v, "err": base}).to_csv(d / f"{s}_per_query.csv", index=False)
            rows.append(_record(arm, seed, nd, 0.30, 0.5, d))
    target = next(x for x in _report(rows, tmp_path / "out").splitlines() if "every sentence-transformers peer" in x)
    assert "behind on 4:" in target and "st-cached-mnrl novel_query ndcg@10 (p 0.000)" in target
    assert "1 of 4 tested behind at p < 0.05" in target


def test_replace_from_swaps_in_a_drifted_reproduction_and_keeps_the_old_record(tmp_path):
    """--replace-from: the identical seed 0 is adopted as before; seed 1 (drifted) is replaced whole
    by its reproduction, the old record moved to runs_superseded.jsonl; --arms limits it."""
    table, repro = _repro_tables(tmp_path, drift=1e-4)
    original, twins = _table(table), [json.loads(x) for x in (repro / "runs.jsonl").read_text().splitlines()]
    buf = io.StringIO()
    assert rt.main(["--out", str(table), "--replace-from", str(repro), "--arms", "gcl"], out=buf) == 0
    assert buf.getvalue() == "" and _table(table) == original  # another arm: nothing to do
    rc, out = 0, None
    buf = io.StringIO()
    rc = rt.main(["--out", str(table), "--replace-from", str(repro), "--arms", "gcl-best"], out=buf)
    out = buf.getvalue().splitlines()
    assert rc == 0 and out == ["adopted: gcl-best seed 0 (largest difference 0)",
                               "replaced: gcl-best seed 1 (largest difference splits/zero_shot/err: 0.0001)"]
    recs = _table(table)
    assert recs[1]["splits"] == twins[1]["splits"] and recs[1]["per_query"] == "per_query/gcl-best-s1.csv.gz"
    assert recs[1]["replaces"]["largest_difference"][0] == "splits/zero_shot/err"
    old = [json.loads(x) for x in (table / "runs_superseded.jsonl").read_text().splitlines()]
    assert len(old) == 1 and {k: v for k, v in old[0].items() if k != "superseded_by"} == original[1]
    assert rr.per_query_mean(rr.read_runs(table / "runs.jsonl"), "in_domain", "err") is not None
    assert rt.main(["--out", str(table), "--replace-from", str(repro), "--arms", "nope"], out=io.StringIO()) == 2


def test_device_trains_and_evaluates_every_gcl_arm_there_and_is_checked_first(tmp_path, capsys, monkeypatch):
    def plan(*argv):
        return rt.make_plan(rt.build_parser().parse_args([*argv, "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")]))

    gpu, cpu = plan("--profile", "budget", "--device", "cuda:0"), plan("--profile", "budget")
    run_dir = rt.run_directory(gpu, "gcl", 0)
    train = rt.train_command(gpu, "gcl", 0, run_dir, False)
    assert "device=cuda:0" in train and [c for c in train if c != "device=cuda:0"] == rt.train_command(cpu, "gcl", 0, run_dir, False)
    for cmd in rt.eval_commands(gpu, "gcl", run_dir).values():
        assert cmd[cmd.index("--device") + 1] == "cuda:0"
    assert all("--device" not in c for c in rt.eval_commands(cpu, "gcl", run_dir).values())  # the default: unchanged
    assert "--device" not in rt.eval_commands(gpu, "bm25", run_dir)["eval"]  # BM25 encodes nothing
    # times measured on one device do not price runs on another
    recs = [{"arm": "gcl", "seed": s, "seconds": 120.0,
             "commands": [rt.shown(rt.train_command(cpu, "gcl", s, rt.run_directory(cpu, "gcl", s), False))]}
            for s in range(2)]
    assert rt.measured_minutes(cpu, recs) and not rt.measured_minutes(gpu, recs)
    # checked before anything runs: this machine's torch may have no CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["--profile", "budget", "--arms", "gcl", "--seeds", "0", "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")]
    assert rt.main([*argv, "--device", "cuda"], out=io.StringIO()) == 2
    assert "error: --device cuda: CUDA is not available here" in capsys.readouterr().err
    assert rt.main([*argv, "device=cuda"], out=io.StringIO()) == 2
    assert "use --device" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "w").exists()
