"""The sentence-transformers peers of a gcl arm, trained by ``SentenceTransformerTrainer`` itself.

A user with graded labels and sentence-transformers picks one of these (issue 12, section 4).
Each is trained by the real library (its trainer, losses, batch samplers, early stopping) on what
a gcl YAML config says, so a peer and a gcl arm read the same file:

    python experiments/st_peers.py --arm cosent --config configs/homedepot_gcl_fast.yaml \\
        --seed 0 --out runs/peers/cosent-s0 [key=value overrides, as gcl train takes them]

Arms (``--arm``); every arm trains on the config's training split (``load_benchmark(cfg.data)``,
the query text of ``model.query_fields[0]`` and the document text of ``model.doc_fields[0]``, as
``gcl train`` does):

=================== ============================================================== =================
arm                 loss, on which pairs                                           batches
=================== ============================================================== =================
``mnrl-all``        ``MultipleNegativesRankingLoss(scale=1/loss.temperature)`` on   ``NO_DUPLICATES``
                    every judged (query, document) pair as a positive
``mnrl-thresholded`` the same on the pairs with score >= the threshold             ``NO_DUPLICATES``
``cached-mnrl``     ``CachedMultipleNegativesRankingLoss(scale=1/T,                ``NO_DUPLICATES``
                    mini_batch_size=16)`` on the thresholded pairs
``cosent``          ``CoSENTLoss`` (default scale 20) on (query, document,         ``BATCH_SAMPLER``
                    ``(s - s_min) / (s_max - s_min)``) for every judged pair
=================== ============================================================== =================

MNRL (one-way, the library's default ``directions=("query_to_doc",)``) for a batch of ``B``
(query, document) rows, with ``c`` the cosine::

    L = -1/B sum_i log( exp(c(q_i, d_i) / T) / sum_j exp(c(q_i, d_j) / T) )

CoSENT, over every two rows of the batch whose labels differ (``y_i > y_j``), ``lambda = 20``::

    L = log(1 + sum_{y_i > y_j} exp(lambda (c(q_j, d_j) - c(q_i, d_i))))

The threshold of the thresholded arms is ``--threshold``, else the config's
``loss.positive_threshold``, else :data:`DEFAULT_THRESHOLD` = 2.0, the value
``configs/homedepot_binary_thresholded.yaml`` uses (Home Depot relevance 1.0 irrelevant .. 3.0
highly relevant; 2.0 "somewhat relevant"). ``cached-mnrl`` trains on the same thresholded pairs as
``mnrl-thresholded``: it is the loss a user picks for MNRL when memory limits the batch, and a
careful user trains MNRL on the relevant pairs only (an irrelevant pair as a positive is a label
error). At the same batch its loss and gradient equal MNRL's (GradCache, Gao et al. 2021: only
the memory and one extra forward differ), so beside ``mnrl-thresholded`` it shows what the
caching costs and that the two agree within seed noise.

What comes from the config, as ``gcl train`` uses it:

* ``optim``: ``max_steps = optim.steps``, ``learning_rate = lr``, ``warmup_steps``,
  ``weight_decay`` (the library excludes biases and LayerNorm weights: for BERT-like towers the
  same parameters as gcl's ``ndim < 2`` rule), ``max_grad_norm = clip_grad_norm``,
  ``lr_scheduler_type``: ``linear``/``cosine``/``constant`` -> ``linear``/``cosine``/
  ``constant_with_warmup``; ``optim = "adamw_torch"`` (``torch.optim.AdamW``, gcl's optimiser);
  ``precision: bf16`` -> ``bf16=True``. The library's warm-up is one step behind gcl's:
  ``lr(t) = lr * t / W`` for ``t < W`` (gcl: ``(t + 1) / W``); from ``t = W`` on they are equal.
* ``batch``: ``batch_size`` rows per optimiser step; with ``grad_accum = A``, ``A`` micro-batches
  of ``batch_size / A`` rows, each with its own in-batch negatives (as gcl).
* ``model``: the text tower (``minilm`` -> the offline package, through gcl's own model loader,
  so the peer is a gcl :class:`~gcl.encoders.model.BiEncoder` and saves as one),
  ``max_seq_length``, and ``freeze_layers = L``: the embeddings and the lower ``L`` transformer
  layers get ``requires_grad=False`` and stay in eval mode (no dropout), the split of gcl's
  :class:`~gcl.training.frozen_cache.FrozenBottom`, so the peer trains the same parameters as the
  gcl arm. With ``cache_frozen`` (the fast config's default) the encoder's forward takes the
  frozen layers' outputs from a cache (:func:`gcl.sentence_transformers.freeze_lower_layers`:
  each distinct text once, from the store ``gcl train`` fills when ``persist_frozen``), so a step
  runs only the trained layers, as gcl's trainer does; the loss and gradient are the same as
  without the cache up to float rounding (tests/test_st_frozen_cache.py), and peer.json counts
  the texts computed and read (``frozen_cache``). ``model.cache_frozen=false`` runs the frozen
  layers at every step (the peers trained before the fourth session of 30 Nov 2026). Dev evaluation and the saved model
  (``gcl_frozen.json``, checked against the loaded weights by ``gcl evaluate``) encode through
  the stored outputs of the
  frozen layers, as a gcl arm's do (:mod:`gcl.training.frozen_reuse`).
* ``seed``: ``seed`` and ``data_seed`` of the trainer (``--seed`` overrides the config's).
* ``eval``: gcl's dev split and gcl's own :class:`~gcl.training.dev_eval.DevEvaluator` (same dev
  corpus, same metrics) wrapped as a sentence-transformers evaluator, every ``eval.every`` steps
  and at the last step (``eval.every: 0``: only at the last step, ``-1``: never), as gcl's
  trainer; ``eval.metric`` picks the best checkpoint (``load_best_model_at_end =
  eval.keep_best``) and ``EarlyStoppingCallback(early_stopping_patience=eval.patience)`` stops
  after ``patience`` evaluations without improvement (0: off).

Not used by the peers (they are gcl's loss and sampler): ``loss.weight_fn``/``weight_params``,
``same_query``, ``same_doc``, ``symmetric``, ``hard_negatives``, ``mined_negatives``,
``batch.sampler``/``docs_per_query``, ``grad_cache_chunk``, ``length_buckets``.

Output in ``--out``: the model (a gcl text model directory; ``gcl evaluate --model OUT`` loads
it; the best dev checkpoint when ``eval.keep_best``) and ``peer.json`` (arm, config, seed, pairs,
steps run, best dev metric and step, dev history, seconds, pairs/s, threads, versions). The
trainer's checkpoints go to ``OUT/checkpoints`` every evaluation (or every ``checkpoint_every``
steps without one); a killed run started again with the same command resumes from the latest,
and a finished one (``peer.json`` present) is skipped. The checkpoints are deleted at the end.

A user mistake (unknown arm or config key, a threshold that leaves no pair, a bad value) prints
one ``error:`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ARMS = ("mnrl-all", "mnrl-thresholded", "cached-mnrl", "cosent")
THRESHOLDED_ARMS = ("mnrl-thresholded", "cached-mnrl")
DEFAULT_THRESHOLD = 2.0  # loss.positive_threshold of configs/homedepot_binary_thresholded.yaml (a test pins it)
DEFAULT_MINI_BATCH = 16  # cached-mnrl: rows per forward pass
EVALUATOR_NAME = "dev"
SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
EXIT_USER_ERROR = 2


@dataclass(frozen=True)
class Peer:
    """One peer run: which arm, its threshold (thresholded arms) and the cached mini-batch size."""

    arm: str
    threshold: float | None = None
    mini_batch_size: int = DEFAULT_MINI_BATCH


# --------------------------------------------------------------------------- data
def peer_threshold(arm: str, cfg, threshold: float | None) -> float | None:
    """The threshold of a thresholded arm: ``threshold``, else ``loss.positive_threshold``, else 2.0."""
    if arm not in THRESHOLDED_ARMS:
        return None
    if threshold is not None:
        return float(threshold)
    configured = cfg.loss.positive_threshold
    return float(configured) if configured is not None else DEFAULT_THRESHOLD


def peer_dataset(peer: Peer, train, cfg):
    """The arm's training rows as a ``datasets.Dataset`` in judgment order.

    MNRL arms: columns ``query``, ``document`` (every judged pair, or those with score >= the
    threshold); ``cosent``: also ``score`` = ``(s - s_min) / (s_max - s_min)`` over the training
    table's range.
    """
    from gcl.errors import ConfigError, DataError
    from gcl.sentence_transformers import to_st_dataset
    from gcl.training.batching import keep_positives

    if peer.arm in THRESHOLDED_ARMS:
        try:
            train = keep_positives(train, peer.threshold)
        except DataError as exc:
            raise ConfigError(f"--threshold / loss.positive_threshold: {exc}") from exc
    fields = {"query_field": cfg.model.query_fields[0], "doc_field": cfg.model.doc_fields[0]}
    ds = to_st_dataset(train, **fields)
    if peer.arm != "cosent":
        return ds.remove_columns("score")
    lo, hi = min(ds["score"]), max(ds["score"])
    if hi <= lo:
        raise ConfigError(f"cosent needs at least two different scores in the training pairs; all are {lo}")
    return ds.map(lambda row: {"score": (row["score"] - lo) / (hi - lo)})


# --------------------------------------------------------------------------- model
def build_model(cfg):
    """The gcl :class:`BiEncoder` the gcl arm starts from (gcl's own loader: ``minilm`` is offline)."""
    from gcl.errors import ConfigError
    from gcl.training.encoding import TextEncoding

    if cfg.model.multifield is not None:
        raise ConfigError("model.multifield: the sentence-transformers peers train text models only")
    return TextEncoding(cfg).build_model(cfg.device)


def freeze_lower_layers(bi, n_layers: int, *, cache: bool = False, cache_dir=None):
    """Embeddings + the lower ``n_layers`` layers frozen and pinned in eval mode, as gcl freezes them
    (:func:`gcl.sentence_transformers.freeze_lower_layers`); with ``cache`` (the config's
    ``model.cache_frozen``) the training forward reads their outputs from a cache
    (:class:`~gcl.training.frozen_reuse.CachedBottomForward`: under ``cache_dir``'s store when
    given, as gcl's trainer does). ``bi.cached_bottom`` encodes dev evaluation and the saved
    model's ``gcl_frozen.json`` through the same stored outputs. Returns ``(frozen, forward)``:
    ``(None, None)`` for ``n_layers == 0``, ``forward`` ``None`` without ``cache``.
    """
    if not n_layers:
        return None, None
    from gcl.sentence_transformers import freeze_lower_layers as freeze
    from gcl.training.frozen_reuse import CachedBottomEncoder, MemoryStore

    bi.cached_bottom = CachedBottomEncoder(bi, n_layers, cache_dir=cache_dir)
    store = bi.cached_bottom.store() if cache and cache_dir is not None else None
    return freeze(bi, n_layers, cache=cache, store=None if isinstance(store, MemoryStore) else store)


def peer_loss(peer: Peer, model, cfg):
    from sentence_transformers.sentence_transformer import losses

    scale = 1.0 / cfg.loss.temperature
    if peer.arm == "cosent":
        return losses.CoSENTLoss(model)
    if peer.arm == "cached-mnrl":
        return losses.CachedMultipleNegativesRankingLoss(model, scale=scale, mini_batch_size=peer.mini_batch_size)
    return losses.MultipleNegativesRankingLoss(model, scale=scale)


# --------------------------------------------------------------------------- evaluation
def dev_evaluator(dev_eval: Callable[[Any], dict[str, float]], bi, metric: str):
    """gcl's dev evaluation as a sentence-transformers evaluator (metrics named ``dev_<metric>``).

    ``dev_eval(bi)`` scores the gcl model whose tower is the model being trained (gcl's
    :class:`DevEvaluator` by default), so the metric is exactly the one ``gcl train`` selects on.
    """
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    class GCLDevEvaluator(SentenceEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = metric

        def __call__(self, model, output_path=None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
            if model is not bi.tower:
                raise RuntimeError("GCLDevEvaluator scores the tower it was built for, not another model")
            metrics = self.prefix_name_to_metrics(dict(dev_eval(bi)), EVALUATOR_NAME)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return GCLDevEvaluator()


def eval_plan(cfg, has_dev: bool) -> int | None:
    """Steps between dev evaluations (``None``: no evaluation), as gcl's trainer schedules them."""
    every = cfg.eval.every
    if every < 0 or not has_dev:
        return None
    return every if every > 0 else cfg.optim.steps


# --------------------------------------------------------------------------- trainer
def training_args(cfg, out: Path, eval_every: int | None):
    """``SentenceTransformerTrainingArguments`` from the gcl config (see the module docstring)."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    from gcl.errors import ConfigError

    o, b = cfg.optim, cfg.batch
    if b.batch_size % b.grad_accum:
        raise ConfigError("batch.grad_accum must divide batch.batch_size")
    evaluating = eval_every is not None
    return SentenceTransformerTrainingArguments(
        output_dir=str(out / "checkpoints"),
        max_steps=o.steps,
        per_device_train_batch_size=b.batch_size // b.grad_accum,
        gradient_accumulation_steps=b.grad_accum,
        learning_rate=o.lr,
        warmup_steps=o.warmup_steps,
        lr_scheduler_type=SCHEDULERS[o.schedule],
        weight_decay=o.weight_decay,
        max_grad_norm=o.clip_grad_norm,
        optim="adamw_torch",
        bf16=o.precision == "bf16",
        seed=cfg.seed,
        data_seed=cfg.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # peer_trainer sets the cosent arm's
        eval_strategy="steps" if evaluating else "no",
        eval_steps=eval_every if evaluating else None,
        save_strategy="steps",
        save_steps=eval_every if evaluating else cfg.checkpoint_every,
        save_total_limit=1,
        load_best_model_at_end=evaluating and cfg.eval.keep_best,
        metric_for_best_model=f"eval_{EVALUATOR_NAME}_{cfg.eval.metric}" if evaluating else None,
        greater_is_better=True,
        logging_steps=cfg.log_every,
        disable_tqdm=not cfg.progress,
        report_to=[],
        use_cpu=cfg.device == "cpu",
        dataloader_num_workers=0,
    )


def peer_trainer(peer: Peer, cfg, splits, out: Path, *, dev_eval=None):
    """``(trainer, bi, dataset)``: the ``SentenceTransformerTrainer`` of one peer, not yet run.

    ``dev_eval(model) -> metrics`` replaces gcl's :class:`DevEvaluator` (tests).
    """
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import EarlyStoppingCallback, PrinterCallback, TrainerCallback

    from gcl.training.trainer import seed_everything

    seed_everything(cfg.seed)
    train = peer_dataset(peer, splits.train, cfg)
    bi = build_model(cfg)
    from gcl.embedding_cache import default_cache_dir

    _, forward = freeze_lower_layers(bi, cfg.model.freeze_layers, cache=cfg.model.cache_frozen,
                                     cache_dir=default_cache_dir() if cfg.model.persist_frozen else None)
    bi.frozen_forward = forward  # its counts go to peer.json
    every = eval_plan(cfg, splits.dev is not None or dev_eval is not None)
    args = training_args(cfg, out, every)
    if peer.arm == "cosent":
        args.batch_sampler = BatchSamplers.BATCH_SAMPLER
    evaluator = None
    callbacks: list = []
    if every is not None:
        if dev_eval is None:
            from gcl.training.dev_eval import DevEvaluator

            dev_eval = DevEvaluator(splits, cfg.eval, seed=cfg.seed)
        evaluator = dev_evaluator(dev_eval, bi, cfg.eval.metric)

        class EvaluateLastStep(TrainerCallback):  # gcl evaluates at the last step too
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step >= state.max_steps:
                    control.should_evaluate = control.should_save = True

        callbacks.append(EvaluateLastStep())
        if cfg.eval.patience:
            callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.eval.patience))
    trainer = SentenceTransformerTrainer(model=bi.tower, args=args, train_dataset=train,
                                         loss=peer_loss(peer, bi.tower, cfg), evaluator=evaluator,
                                         callbacks=callbacks)
    if not cfg.progress:
        trainer.remove_callback(PrinterCallback)
    return trainer, bi, train


def step_clock():
    """A callback timing every optimiser step, batch loading and collating included: the time from
    the end of the previous step (or of the evaluation, save or log that followed it) to its end."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._mark = time.perf_counter()

        def _now(self, *args, **kwargs):
            self._mark = time.perf_counter()

        on_train_begin = on_evaluate = on_save = on_log = _now

        def on_step_end(self, *args, **kwargs):
            self.seconds.append(time.perf_counter() - self._mark)
            self._now()

    return StepClock()


def latest_checkpoint(out: Path) -> str | None:
    ckpts = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    return str(ckpts[-1]) if ckpts else None


def run_peer(peer: Peer, cfg, out: Path, *, splits=None, dev_eval=None, config_path: str | None = None,
             overrides: list[str] | None = None, keep_checkpoints: bool = False) -> dict:
    """Train one peer, save the model to ``out`` and return (and write) its ``peer.json`` record."""
    import torch

    if splits is None:
        from gcl.data.sources import load_benchmark

        splits = load_benchmark(cfg.data, announce=lambda m: print(m, file=sys.stderr))
    out.mkdir(parents=True, exist_ok=True)
    trainer, bi, train = peer_trainer(peer, cfg, splits, out, dev_eval=dev_eval)
    clock = step_clock()
    trainer.add_callback(clock)
    resume = latest_checkpoint(out)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - t0
    bi.save(out)
    state = trainer.state
    history = [{k: v for k, v in rec.items() if k == "step" or k.startswith(f"eval_{EVALUATOR_NAME}_")}
               for rec in state.log_history if f"eval_{EVALUATOR_NAME}_{cfg.eval.metric}" in rec]
    best_step = (int(state.best_model_checkpoint.rsplit("-", 1)[-1]) if state.best_model_checkpoint else None)
    record = {
        "arm": peer.arm,
        "config": config_path,
        "overrides": list(overrides or []),
        "seed": cfg.seed,
        "threshold": peer.threshold,
        "mini_batch_size": peer.mini_batch_size if peer.arm == "cached-mnrl" else None,
        "loss": type(trainer.loss).__name__ if not isinstance(trainer.loss, dict) else None,
        "data": splits.name,
        "pairs": len(train),
        "steps": state.global_step,
        "max_steps": cfg.optim.steps,
        "epochs": state.epoch,
        "stopped_early": state.global_step < cfg.optim.steps,
        "metric": cfg.eval.metric,
        "best_metric": state.best_metric,
        "best_step": best_step,
        "model_is_best": bool(trainer.args.load_best_model_at_end and best_step is not None),
        "dev_history": history,
        "resumed_from": resume,
        "seconds": seconds,
        "train_pairs_per_s": result.metrics.get("train_samples_per_second"),  # the library's: evaluations included
        "step_seconds": clock.seconds,  # per optimiser step, batch loading included, evaluation not
        "step_pairs_per_s": cfg.batch.batch_size * len(clock.seconds) / max(sum(clock.seconds), 1e-9),
        "frozen_cache": bi.frozen_forward.stats() if getattr(bi, "frozen_forward", None) is not None else None,
        "threads": torch.get_num_threads(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions(),
        "config_values": _config_dict(cfg),
    }
    (out / "peer.json").write_text(json.dumps(record, indent=1, default=str))
    if not keep_checkpoints:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return record


def versions() -> dict[str, str]:
    import sentence_transformers
    import torch
    import transformers

    import gcl

    return {"python": platform.python_version(), "torch": torch.__version__,
            "sentence_transformers": sentence_transformers.__version__, "transformers": transformers.__version__,
            "gcl": getattr(gcl, "__version__", "?")}


def _config_dict(cfg) -> dict:
    from gcl.config import to_dict

    return to_dict(cfg)


# --------------------------------------------------------------------------- command line
class _Parser(argparse.ArgumentParser):
    """argparse whose usage mistakes print one ``error:`` line and exit with status 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)


def parse_args(argv: list[str] | None):
    p = _Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arm", required=True, choices=ARMS)
    p.add_argument("--config", required=True, help="the gcl YAML config (configs/...)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config, e.g. optim.steps=30")
    p.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    p.add_argument("--out", required=True, help="model directory (and peer.json, checkpoints while running)")
    p.add_argument("--threshold", type=float, default=None,
                   help=f"thresholded arms: positives have score >= this (default: loss.positive_threshold, "
                        f"else {DEFAULT_THRESHOLD})")
    p.add_argument("--mini-batch-size", type=int, default=DEFAULT_MINI_BATCH, help="cached-mnrl: rows per forward")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--keep-checkpoints", action="store_true")
    return p.parse_args(argv)


def load_peer_config(config: str, overrides: list[str], seed: int | None):
    from gcl.config import load_config
    from gcl.training.config import TrainConfig

    items = list(overrides) + ([f"seed={seed}"] if seed is not None else [])
    return load_config(TrainConfig, config, items)


def finished(out: Path, peer: Peer, cfg) -> bool:
    """True when ``out`` holds this very run, finished; a ConfigError when it holds another one."""
    from gcl.errors import ConfigError

    path = out / "peer.json"
    if not path.is_file():
        return False
    try:
        done = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); delete it to train again") from exc
    same = (done.get("arm") == peer.arm and done.get("threshold") == peer.threshold
            and done.get("config_values") == json.loads(json.dumps(_config_dict(cfg), default=str)))
    if not same:
        raise ConfigError(f"{out} holds a finished run of another arm or config ({path}); choose another --out")
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gcl.errors import ConfigError, GCLError

    try:
        if args.mini_batch_size < 1:
            raise ConfigError(f"--mini-batch-size must be >= 1, got {args.mini_batch_size}")
        cfg = load_peer_config(args.config, args.overrides, args.seed)
        peer = Peer(args.arm, peer_threshold(args.arm, cfg, args.threshold), args.mini_batch_size)
        out = Path(args.out)
        if finished(out, peer, cfg):
            print(f"{out}: finished already (peer.json); nothing to do")
            return 0
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        record = run_peer(peer, cfg, out, config_path=args.config, overrides=args.overrides,
                          keep_checkpoints=args.keep_checkpoints)
    except GCLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    keys = ("arm", "pairs", "steps", "best_metric", "best_step", "seconds", "step_pairs_per_s", "threads")
    print(json.dumps({k: record[k] for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
