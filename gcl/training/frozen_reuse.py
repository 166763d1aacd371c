"""Encoding a model whose lower layers were frozen in training through their cached outputs.

A model trained with ``model.freeze_layers: L`` has the lower part ``B`` (embeddings +
``layers[:L]``) of the model it started from, bit for bit. Its embeddings are
``e(x) = normalize(P(T(B(x))))`` (:mod:`gcl.training.frozen_cache`), and ``B(x)`` is already on
disk for every text any run with the same ``B`` has seen (:mod:`gcl.hidden_store`). So dev
evaluation during training (the dev corpus every half epoch) and ``gcl evaluate`` of the saved
model (each test corpus once) run only the top layers ``T`` and the pooling ``P`` on texts whose
``B(x)`` is stored, and compute (then store) ``B(x)`` for the others.

The saved model records what that needs in ``gcl_frozen.json``::

    {"freeze_layers": L, "fingerprint": "<sha1 of B: FrozenBottom.fingerprint()>"}

and :func:`attach_saved` uses the record only after recomputing the fingerprint of the loaded
weights: lower layers that differ from the recorded ones (e.g. the model was trained further)
are encoded with the full forward, with a warning. The result equals the full forward up to
float rounding of batch shapes (``tests/test_frozen_reuse.py``: float64, to 1e-12).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from gcl.atomic import write_atomic

FROZEN_FILE = "gcl_frozen.json"
BLOCK_TEXTS = 16384  # texts whose states are held at once (27k titles x 13 tokens x 384 x 4 B = 0.5 GB)
# Fewer texts than this in one call (a service's queries, a small batch) take the full forward:
# no cache file is read or written for them
MIN_TEXTS = 512


class MemoryStore:
    """The :class:`gcl.hidden_store.HiddenStore` interface in memory (no cache directory)."""

    def __init__(self) -> None:
        self._states: dict[str, np.ndarray] = {}
        self.path = "memory"

    def __len__(self) -> int:
        return len(self._states)

    def lookup(self, keys: Sequence[str], lengths: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        got = [self._states.get(k) for k in keys]
        found = np.array([g is not None and len(g) == int(n) for g, n in zip(got, lengths)], dtype=bool)
        return found, [g for g, f in zip(got, found) if f]

    def put(self, keys: Sequence[str], flat: np.ndarray, lengths: np.ndarray) -> None:
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
        for k, a, n in zip(keys, starts, np.asarray(lengths).tolist()):
            self._states[k] = flat[a: a + n].copy()


class CachedBottomEncoder:
    """``encode_texts`` of a :class:`~gcl.encoders.model.BiEncoder` through stored ``B(x)``.

    ``cache_dir``: the root of the on-disk store (:func:`gcl.embedding_cache.default_cache_dir`
    by default at load); ``None`` keeps the states in memory for this process only.
    """

    def __init__(self, model, n_layers: int, *, cache_dir: str | Path | None) -> None:
        from gcl.training.frozen_cache import FrozenBottom

        self.frozen = FrozenBottom(model, n_layers, freeze=False)
        self.cache_dir = cache_dir
        self.fingerprint = self.frozen.fingerprint()  # B never changes: its weights are frozen
        self._store = None

    @property
    def n_layers(self) -> int:
        return self.frozen.n_layers

    def store(self):
        """The store of this model's ``B`` (opened on first use; in memory if the disk fails)."""
        if self._store is None:
            from gcl.hidden_store import open_store

            disk = open_store(self.cache_dir, self.fingerprint) if self.cache_dir is not None else None
            self._store = disk if disk is not None else MemoryStore()
        return self._store

    def record(self) -> dict:
        return {"freeze_layers": self.n_layers, "fingerprint": self.frozen.fingerprint()}

    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
        """(n, d) float32 L2-normalised embeddings, the same rows as the model's full forward
        (which computes them when there are fewer than :data:`MIN_TEXTS` texts)."""
        if len(texts) < MIN_TEXTS:
            emb = self.frozen.model.tower.encode(list(texts), batch_size=batch_size, show_progress_bar=False,
                                                 convert_to_numpy=True, normalize_embeddings=True)
            return emb.astype(np.float32, copy=False)
        return self.embed(texts, batch_size=batch_size).float().numpy()

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
        """(n, d) embeddings in the model's dtype (CPU), no graph: ``normalize(P(T(B(x))))``
        with ``B(x)`` read from the store where it is there."""
        from gcl.training.frozen_cache import HiddenCache, hidden_states

        model = self.frozen.model
        texts = [str(t) for t in texts]
        dtype = next(model.parameters()).dtype
        if not texts:
            return torch.zeros((0, model.dim), dtype=dtype)
        uniq, inverse = np.unique(np.array(texts, dtype=object), return_inverse=True)
        emb = torch.empty((len(uniq), model.dim), dtype=dtype)
        was = model.tower.training
        model.tower.eval()
        try:
            for s in range(0, len(uniq), BLOCK_TEXTS):
                block = list(uniq[s: s + BLOCK_TEXTS])
                feats = model.tokenize(block)
                mask = feats["attention_mask"].bool()
                lengths = mask.sum(1).numpy().astype(np.int64)
                ids = [row[m].tolist() for row, m in zip(feats["input_ids"], mask)]

                def collate(codes, feats=feats, lengths=lengths):
                    c = torch.as_tensor(codes)
                    width = int(lengths[codes].max())
                    return {k: v[c, :width] for k, v in feats.items() if torch.is_tensor(v)}

                flat = hidden_states(self.frozen, ids, lengths, collate, store=self.store(), batch_texts=batch_size)
                cache = HiddenCache(self.frozen, flat, lengths, 0.0)
                for pos in cache.chunks(np.arange(len(block)), batch_size):
                    emb[torch.as_tensor(s + pos)] = cache.embed(model, pos).to("cpu", dtype)
        finally:
            model.tower.train(was)
        return emb[torch.as_tensor(inverse.reshape(-1))]


def write_record(model, path: Path) -> None:
    """``gcl_frozen.json`` in a saved model's directory when the model encodes through its bottom."""
    enc = getattr(model, "cached_bottom", None)
    if enc is None:
        return
    record = enc.record()
    write_atomic(path / FROZEN_FILE, lambda fh: fh.write(json.dumps(record, indent=2).encode()))


def attach_saved(model, path: Path, *, cache_dir: str | Path | None) -> None:
    """Give a loaded model its :class:`CachedBottomEncoder` when ``path`` records a frozen bottom
    and the loaded lower layers are bit-identical to it (else warn: the full forward is used)."""
    from gcl.encoders.base import read_json_object
    from gcl.errors import ConfigError

    raw = read_json_object(path / FROZEN_FILE)
    if raw is None:
        return
    try:
        n_layers, recorded = int(raw["freeze_layers"]), str(raw["fingerprint"])
        enc = CachedBottomEncoder(model, n_layers, cache_dir=cache_dir)
    except (KeyError, TypeError, ValueError, ConfigError) as exc:  # a record this model cannot use
        warnings.warn(f"{path / FROZEN_FILE}: not used ({exc}); encoding with the whole model", stacklevel=2)
        return
    if enc.fingerprint != recorded:
        warnings.warn(f"{path / FROZEN_FILE}: the lower {n_layers} layers of this model differ from the recorded "
                      f"frozen ones; encoding with the whole model", stacklevel=2)
        return
    model.cached_bottom = enc


def use_cache_dir(model, cache_dir: str | Path | None) -> None:
    """Point a loaded model's stored lower-layer outputs at ``cache_dir`` (``None``: memory only),
    as ``gcl evaluate --cache-dir`` / ``--no-cache`` do; nothing for other models."""
    enc = getattr(model, "cached_bottom", None)
    if enc is not None:
        enc.cache_dir, enc._store = cache_dir, None
