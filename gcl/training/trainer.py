"""The GCL training loop.

One readable loop: sample a global batch of graded pairs, encode queries and documents (in
chunks with gradient caching when configured), gather embeddings across processes, compute the
weighted contrastive loss, step AdamW under a warm-up + decay schedule, log, evaluate on the dev
split, keep the best model, stop early, checkpoint atomically.

Gradient caching (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup"): encode all texts without a graph, compute the loss on the embedding matrix and
its gradient G = ∂L/∂E, then re-encode chunk by chunk with a graph and back-propagate G, so the
activation memory is that of one chunk while the negatives are the whole batch. Dropout is
replayed exactly by restoring the RNG state of each chunk's first pass.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from gcl.config import to_dict
from gcl.errors import ConfigError, DataError
from gcl.encoders.model import BiEncoder
from gcl.losses import GCLLoss, get_weight_fn
from gcl.training import distributed as D
from gcl.training.batching import TokenCache, hard_negative_rows, keep_positives, make_sampler
from gcl.training.checkpoint import (
    CHECKPOINT_FILE,
    load_checkpoint,
    rng_state,
    sampler_state_from_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from gcl.training.config import RESUME_MUTABLE, TrainConfig
from gcl.training.encoding import FieldEncoding, TextEncoding
from gcl.training.metrics_log import MetricsLog


def lr_factor(step: int, cfg) -> float:
    """Linear warm-up over ``warmup_steps``, then linear/cosine decay to 0 at ``steps`` (or constant)."""
    warm = cfg.warmup_steps
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, cfg.steps - warm)
    progress = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not key.endswith(("weight_params", "doc_field_weights")):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def check_resume_compatible(saved: dict, current: dict) -> None:
    """ConfigError when a setting outside RESUME_MUTABLE differs. Keys a checkpoint predates
    (settings added later) count as their default value."""
    a, b = _flatten(saved), _flatten(current)
    defaults = _flatten(to_dict(TrainConfig()))
    a = {**{k: v for k, v in defaults.items() if k not in a}, **a}
    diffs = [k for k in sorted(set(a) | set(b)) if k not in RESUME_MUTABLE and a.get(k) != b.get(k)]
    if diffs:
        detail = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diffs[:5])
        raise ConfigError(f"cannot resume: the config differs from the checkpoint's in {detail}")


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    best_metric: float | None
    best_step: int | None
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False


class Trainer:
    """Train a :class:`BiEncoder` (text) or, when ``model.multifield`` is set, a
    :class:`~gcl.encoders.multifield.MultiFieldModel` (text and image fields, see
    docs/multimodal.md) with :class:`GCLLoss` on the benchmark's training split. What differs
    between the two is one strategy object, ``self.encoding`` (:mod:`gcl.training.encoding`)."""

    def __init__(self, cfg: TrainConfig, *, splits=None, model: BiEncoder | None = None, dist: D.DistInfo | None = None,
                 dev_eval: Callable[[Any], dict[str, float]] | None = None):
        """``dev_eval(model) -> metrics`` scores the model during training (keep-best, early
        stopping); default: :class:`gcl.training.dev_eval.DevEvaluator` on ``splits.dev``, built
        on first use."""
        self.cfg = cfg
        self.dist = dist or D.DistInfo()
        if cfg.batch.batch_size % (self.dist.world_size * cfg.batch.grad_accum):
            raise ConfigError("batch.batch_size must be divisible by world size × grad_accum")
        self.encoding = FieldEncoding(cfg) if cfg.model.multifield is not None else TextEncoding(cfg)
        if splits is None:
            from gcl.data.sources import load_benchmark

            splits = load_benchmark(self.encoding.data_config())
        if cfg.eval.every >= 0 and dev_eval is None and splits.dev is not None and len(splits.dev.queries) == 0:
            raise ConfigError(f"the dev split has no queries (data.dev_frac={cfg.data.dev_frac}), so eval.every="
                              f"{cfg.eval.every} has nothing to evaluate: set eval.every=-1 (no dev evaluation) "
                              "or data.dev_frac > 0")
        self.splits = splits
        self.out_dir = Path(cfg.out_dir)
        seed_everything(cfg.seed)
        device = cfg.device
        if self.dist.enabled and device == "cuda":  # one GPU per process (NCCL cannot share one)
            device = f"cuda:{self.dist.local_rank}"
            torch.cuda.set_device(device)
        self.model = model if model is not None else self.encoding.build_model(device)
        train = keep_positives(splits.train, cfg.loss.positive_threshold)
        try:
            weight_fn = get_weight_fn(cfg.loss.weight_fn, **cfg.loss.weight_params)
        except ValueError as exc:  # unknown name, bad parameters, failed import: a config mistake
            raise ConfigError(f"loss.weight_fn: {exc}") from exc
        try:
            weights = weight_fn(train.judgments)
        except ValueError as exc:  # NaN / infinite scores, bad user-function output
            raise DataError(f"cannot weight the training judgments: {exc}", source=getattr(train, "name", None)) from exc
        self.pairs = self.encoding.prepare(self.model, train, weights)
        self.sampler = make_sampler(self.pairs, cfg.batch, cfg.seed)
        self.hn_rng = np.random.default_rng(cfg.seed + 1)
        self.miner = None
        if cfg.loss.mined_negatives > 0:
            from gcl.training.mining import NegativeMiner

            self.miner = NegativeMiner(self.pairs, depth=cfg.loss.mine_depth, skip=cfg.loss.mine_skip,
                                       refresh=cfg.loss.mine_every, **self.encoding.code_tables)
        lc = cfg.loss
        self.loss_fn = GCLLoss(
            temperature=lc.temperature,
            learnable_temperature=lc.learnable_temperature,
            symmetric=lc.symmetric,
            same_query=lc.same_query,
            same_doc=lc.same_doc,
            targets=lc.targets,
            target_temperature=lc.target_temperature,
            lambda_weight=lc.lambda_weight,
            # gains of the pairwise term: scores min-max normalised over the training pairs
            score_range=(float(self.pairs.score.min()), float(self.pairs.score.max())) if lc.lambda_weight else None,
            cosent_weight=lc.cosent_weight,
        )
        params = [p for p in self.model.parameters() if p.requires_grad] + list(self.loss_fn.parameters())
        self.params = params
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.optim.lr,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg.optim))
        self.step = 0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.history: list[dict] = []
        self._evaluator = dev_eval

    # ------------------------------------------------------------------ encoding
    def autocast(self):
        """The context the encoders run in: bf16 autocast when ``optim.precision`` is ``bf16``."""
        if self.cfg.optim.precision == "bf16":
            return torch.autocast(device_type=self.model.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def encode_tokens(self, cache: TokenCache, codes: np.ndarray) -> torch.Tensor:
        with self.autocast():
            return cache.embed(self.model, codes).float()

    def _rng_state(self) -> tuple:
        """CPU and (on CUDA) device RNG states: dropout on a GPU draws from the device generator."""
        dev = self.model.device
        return torch.get_rng_state(), (torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None)

    def _set_rng_state(self, state: tuple) -> None:
        cpu, cuda = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, self.model.device)

    def encode_bucketed(self, cache: TokenCache, codes: np.ndarray) -> torch.Tensor:
        """Encode in ``length_buckets`` length-sorted chunks, each padded to its own longest text
        (length-bucketed dynamic padding); rows come back in ``codes`` order, with a graph."""
        n = self.cfg.batch.length_buckets
        if n <= 1 or len(codes) < 2 * n:
            return self.encode_tokens(cache, codes)
        chunks = cache.chunks(codes, -(-len(codes) // n))
        embs = torch.cat([self.encode_tokens(cache, codes[pos]) for pos in chunks])
        inverse = torch.empty(len(codes), dtype=torch.long)
        inverse[torch.as_tensor(np.concatenate(chunks))] = torch.arange(len(codes))
        return embs[inverse]

    def embed_with_grad_cache(self, cache: TokenCache, codes: np.ndarray) -> tuple[torch.Tensor, list]:
        """First pass: embeddings without a graph, remembering each chunk's RNG state."""
        chunks = cache.chunks(codes, self.cfg.batch.grad_cache_chunk)
        out = torch.empty((len(codes), self.model.dim), device=self.model.device)
        states = []
        with torch.no_grad():
            for pos in chunks:
                states.append(self._rng_state())
                out[torch.as_tensor(pos, device=out.device)] = self.encode_tokens(cache, codes[pos])
        return out, list(zip(chunks, states))

    def replay_grad_cache(self, cache: TokenCache, codes: np.ndarray, plan: list, grad: torch.Tensor) -> None:
        """Second pass: re-encode each chunk with a graph and back-propagate the cached gradient."""
        after = self._rng_state()
        for pos, state in plan:
            self._set_rng_state(state)
            emb = self.encode_tokens(cache, codes[pos])
            emb.backward(grad[torch.as_tensor(pos, device=grad.device)])
        self._set_rng_state(after)

    def _batch_inputs(self, rows: np.ndarray, embed_docs) -> tuple[np.ndarray, dict, torch.Tensor]:
        """What every micro-step shares: this process's slice of ``rows``, the loss's ``meta`` (ids,
        scores, fixed negatives) and the pairs' weights. Fixed negatives are the lower-graded
        documents of the batch's queries plus mined ones, embedded by ``embed_docs(codes)`` with no
        gradient through them (documented)."""
        p, lc = self.pairs, self.cfg.loss
        meta = dict(
            query_ids=torch.as_tensor(p.query_code[rows]),
            doc_ids=torch.as_tensor(p.doc_code[rows]),
            scores=torch.as_tensor(p.score[rows]),
        )
        weights = torch.as_tensor(p.weight[rows], dtype=torch.float32)
        hn_codes = p.doc_code[hard_negative_rows(p, rows, lc.hard_negatives, self.hn_rng)]
        if self.miner is not None:
            hn_codes = np.concatenate([hn_codes, self.miner.sample(p.query_code[rows], lc.mined_negatives, self.hn_rng)])
        if len(hn_codes):
            with torch.no_grad():
                meta.update(hard_neg_emb=embed_docs(hn_codes), hard_neg_doc_ids=torch.as_tensor(hn_codes))
        return rows[self.dist.rows(len(rows))], meta, weights

    def _micro_step(self, rows: np.ndarray, loss_scale: float) -> float:
        """Forward + backward of one micro-batch (global rows; this process encodes its slice):
        the shared inputs, then the model kind's forward and loss (:mod:`gcl.training.encoding`)."""
        local, meta, weights = self._batch_inputs(rows, lambda codes: self.encoding.fixed_documents(self, codes))
        return self.encoding.step(self, rows, local, weights, meta, loss_scale)

    def train_step(self) -> float:
        """One optimiser step over one global batch (split into ``grad_accum`` micro-batches)."""
        if self.miner is not None:
            self.miner.maybe_refresh(self.model, self.step)
        self.encoding.train_mode(self.model)
        batch = self.sampler.next_batch()
        micro = np.array_split(batch, self.cfg.batch.grad_accum)
        self.optimizer.zero_grad(set_to_none=True)
        losses = [self._micro_step(m, 1.0 / len(micro)) for m in micro]
        D.all_reduce_grads(self.params, self.dist)
        # Encoder gradients are partial per process (summed: exact); the loss's own parameters
        # (learnable temperature) get the full gradient on every process: average, not sum.
        for p in self.loss_fn.parameters():
            if p.grad is not None and self.dist.enabled:
                p.grad /= self.dist.world_size
        if self.cfg.optim.clip_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.clip_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return float(np.mean(losses))

    # ------------------------------------------------------------------ evaluation
    def evaluate_dev(self) -> dict[str, float]:
        if self._evaluator is None:
            from gcl.training.dev_eval import DevEvaluator

            self._evaluator = DevEvaluator(self.splits, self.cfg.eval, seed=self.cfg.seed)
        self.model.eval()
        return self._evaluator(self.model)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "config": to_dict(self.cfg),
            "step": self.step,
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "hn_rng": self.hn_rng.bit_generator.state,
            "miner": self.miner.state_dict() if self.miner is not None else None,
            "rng": rng_state(),
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "history": self.history,
        }

    def load_state_dict(self, state: dict) -> None:
        check_resume_compatible(state["config"], to_dict(self.cfg))
        self.model.load_state_dict(state["model"])
        self.loss_fn.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(sampler_state_from_checkpoint(state["sampler"]))
        self.hn_rng.bit_generator.state = state["hn_rng"]
        if self.miner is not None and state.get("miner") is not None:
            self.miner.load_state_dict(state["miner"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best_metric, self.best_step = state["best_metric"], state["best_step"]
        self.bad_evals = int(state["bad_evals"])
        self.history = list(state["history"])

    def save(self) -> None:
        if self.dist.is_main:
            save_checkpoint(self.out_dir, self.state_dict())

    # ------------------------------------------------------------------ the loop
    def fit(self, *, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Train to ``optim.steps``. ``resume`` continues from ``out_dir/checkpoint.pt``;
        ``stop_after`` ends the call after that many steps (used to test interruption)."""
        cfg = self.cfg
        if resume and (self.out_dir / CHECKPOINT_FILE).exists():
            self.load_state_dict(load_checkpoint(self.out_dir))
        elif resume:
            raise ConfigError(f"--resume given but no checkpoint in {self.out_dir}")
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        log = MetricsLog(self.out_dir, enabled=self.dist.is_main, tensorboard=cfg.tensorboard)
        try:
            return self._loop(log, stop_after)
        finally:
            log.close()

    def _loop(self, log: MetricsLog, stop_after: int | None) -> TrainResult:
        cfg = self.cfg
        bar = tqdm(total=cfg.optim.steps, initial=self.step, disable=not (cfg.progress and self.dist.is_main), desc="train")
        stopped_early = False
        t0, pairs_done, losses = time.perf_counter(), 0, []
        end = cfg.optim.steps if stop_after is None else min(cfg.optim.steps, self.step + stop_after)
        while self.step < end:
            losses.append(self.train_step())
            pairs_done += cfg.batch.batch_size
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.optim.steps:
                rate = pairs_done / max(time.perf_counter() - t0, 1e-9)
                rec = {"step": self.step, "loss": float(np.mean(losses)), "lr": self.scheduler.get_last_lr()[0],
                       "pairs_per_s": rate, "temperature": float(self.loss_fn.temperature)}
                bar.set_postfix(loss=f"{rec['loss']:.4f}", pairs_s=f"{rate:.0f}")
                log.log(rec)
                losses = []
            final = self.step == cfg.optim.steps
            if cfg.eval.every >= 0 and (final or (cfg.eval.every > 0 and self.step % cfg.eval.every == 0)):
                # rank 0 evaluates and decides; every rank must stop with it (else they hang in all_gather)
                if D.any_flag(self._eval_and_keep(log), self.dist):
                    stopped_early = True
                    break
            if self.step % cfg.checkpoint_every == 0 or final:
                self.save()
        bar.close()
        if self.dist.is_main and (self.step >= cfg.optim.steps or stopped_early):
            self.save()
            self.model.save(self.out_dir / "final")
        D.barrier(self.dist)
        return TrainResult(self.out_dir, self.step, self.best_metric, self.best_step, self.history, stopped_early)

    def _eval_and_keep(self, log: MetricsLog) -> bool:
        """Evaluate on dev, keep the best model, return True when early stopping triggers."""
        if not self.dist.is_main or self.splits.dev is None:
            return False
        metrics = self.evaluate_dev()
        rec = {"step": self.step, **{f"dev/{k}": v for k, v in metrics.items()}}
        self.history.append(rec)
        log.log(rec)
        value = metrics[self.cfg.eval.metric]
        if self.best_metric is None or value > self.best_metric:
            self.best_metric, self.best_step, self.bad_evals = value, self.step, 0
            if self.cfg.eval.keep_best:
                self.model.save(self.out_dir / "best")
        else:
            self.bad_evals += 1
        return bool(self.cfg.eval.patience and self.bad_evals >= self.cfg.eval.patience)

