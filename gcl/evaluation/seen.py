"""Seen / unseen in-domain queries of a trained run, by replaying its batch sampler.

The in-domain split holds the training queries (train + dev). A short run draws only some of
them, so "in-domain" mixes queries the model was trained on with queries it never saw. The
trainer's samplers are deterministic given the run's seed, batch settings and training pairs
(:mod:`gcl.training.batching`), so the batches of a finished run can be drawn again without a
model. Groups of the in-domain test queries:

* ``seen`` -- at least ``min_docs`` of the query's judged pairs were in one training batch, in
  the run's first ``steps`` steps (``min_docs=1``: the run trained on the query at least once;
  ``min_docs=2``: two of its documents met in one loss, the within-query ordering signal);
* ``unseen`` -- training queries of the run never drawn so (including queries whose pairs all
  fall below ``loss.positive_threshold``);
* ``dev`` -- the dev queries, withheld from training (early stopping only).

The replay needs the run's ``config.json`` (written by ``gcl train`` in its ``out_dir``) and the
same data and split seed as the evaluation; ``steps`` defaults to the last step logged in the
run's ``metrics.jsonl`` (the step the run stopped at), else ``optim.steps``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from gcl.errors import ConfigError
from gcl.data.schema import QUERY_ID

GROUPS = ("seen", "unseen", "dev")


def load_run_config(run_dir: str | Path):
    """The :class:`~gcl.training.config.TrainConfig` a ``gcl train`` run wrote to ``config.json``."""
    from gcl.config import from_dict
    from gcl.training.config import TrainConfig

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not found (give the out_dir of a gcl train run, which holds config.json)")
    try:
        return from_dict(TrainConfig, json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a gcl train config: {exc}") from None


def run_steps(run_dir: str | Path, cfg) -> int:
    """The last step logged in ``metrics.jsonl`` (where the run stopped), else ``cfg.optim.steps``."""
    path = Path(run_dir) / "metrics.jsonl"
    steps = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                steps.append(int(json.loads(line)["step"]))
            except (ValueError, KeyError, TypeError):
                continue
    return max(steps) if steps else int(cfg.optim.steps)


def seen_queries(train, cfg, steps: int, *, min_docs: int = 1) -> set:
    """Query ids of which the run's sampler put ``>= min_docs`` pairs in one batch in ``steps`` steps.

    ``train`` is the benchmark's training split; ``cfg`` the run's TrainConfig (threshold, sampler,
    batch size, documents per query, seed).
    """
    from gcl.training.batching import TrainPairs, keep_positives, make_sampler

    train = keep_positives(train, cfg.loss.positive_threshold)
    j = train.judgments
    q_codes, q_ids = pd.factorize(j[QUERY_ID])  # the trainer's query codes (TrainPairs.from_dataset)
    n = len(j)
    pairs = TrainPairs(query_code=q_codes.astype(np.int64), doc_code=np.arange(n, dtype=np.int64),
                       score=np.zeros(n), weight=np.ones(n), query_texts=[], doc_texts=[])
    sampler = make_sampler(pairs, cfg.batch, cfg.seed)
    codes: set[int] = set()
    for _ in range(steps):
        q, count = np.unique(pairs.query_code[sampler.next_batch()], return_counts=True)
        codes.update(int(c) for c in q[count >= min_docs])
    return {q_ids[c] for c in codes}


def query_groups(bench, run_dir: str | Path, *, steps: int | None = None, min_docs: int = 1) -> tuple[dict, dict]:
    """``({group: set of query ids}, info)`` for the in-domain queries of ``bench`` and the run."""
    cfg = load_run_config(run_dir)
    manifest_seed = (bench.describe() or {}).get("seed")
    if manifest_seed is not None and int(manifest_seed) != int(cfg.data.split_seed):
        raise ConfigError(
            f"{run_dir}: the run was trained with data.split_seed={cfg.data.split_seed}, the evaluation splits with "
            f"seed {manifest_seed}; use --split-seed {cfg.data.split_seed}")
    steps = run_steps(run_dir, cfg) if steps is None else int(steps)
    seen = seen_queries(bench.train, cfg, steps, min_docs=min_docs)
    train_ids = set(bench.train.queries.index)
    dev_ids = set(bench.dev.queries.index) if bench.dev is not None else set()
    groups = {"seen": seen, "unseen": train_ids - seen, "dev": dev_ids}
    info = {"run": str(run_dir), "steps": steps, "min_docs": min_docs, "sampler": cfg.batch.sampler,
            "seed": cfg.seed, "positive_threshold": cfg.loss.positive_threshold}
    return groups, info


def group_summaries(per_query: pd.DataFrame, groups: dict) -> dict:
    """``{group: {"queries": n, "summary": {metric: mean}}}`` over the rows of ``per_query``."""
    out = {}
    for name, ids in groups.items():
        rows = per_query.loc[per_query.index.isin(list(ids))]
        out[name] = {"queries": int(len(rows)),
                     "summary": {m: float(rows[m].mean()) if len(rows) else float("nan") for m in rows.columns}}
    return out


def groups_table(split: str, groups: dict, columns: tuple[str, ...]) -> str:
    head = f"{'split':<14}{'group':<10}{'queries':>8}" + "".join(f"{c:>10}" for c in columns)
    lines = [head, "-" * len(head)]
    for name, g in groups.items():
        cells = "".join(f"{g['summary'].get(c, float('nan')):>10.4f}" for c in columns)
        lines.append(f"{split:<14}{name:<10}{g['queries']:>8}{cells}")
    return "\n".join(lines)
