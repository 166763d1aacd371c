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


MAX_MEMORY_BYTES = 4 << 30  # CachedBottomForward's in-memory states (beyond: the store, or computed again)
# Keyword arguments of a Hugging Face encoder's forward that the cached forward cannot honour: a
# call that sets any of them goes to the encoder's own forward.
_UNCACHED_KWARGS = ("inputs_embeds", "position_ids", "head_mask", "output_attentions", "output_hidden_states",
                    "encoder_hidden_states", "past_key_values")


class CachedBottomForward:
    """The training forward of an encoder whose lower ``L`` layers are frozen, ``B(x)`` cached.

    Installed as the Hugging Face encoder's ``forward`` (:meth:`install`), it returns the same
    ``last_hidden_state`` as the encoder's own forward,

        last_hidden_state = T(B(x), m)          T = layers[L:]  (trained, with its dropout)

    with ``B(x)`` (embeddings + ``layers[:L]``, frozen, eval mode) taken from memory (each distinct
    token sequence once per process), else from the on-disk store of ``B``'s fingerprint
    (:mod:`gcl.hidden_store`: shared with ``gcl train`` and ``gcl evaluate``), else computed by the
    frozen layers (no graph) and stored. A step then runs only ``T``: the loss is the same function
    of the trained parameters, with the same value and gradient up to float rounding of batch
    shapes, for the reasons in :mod:`gcl.training.frozen_cache` (padded positions have attention
    weight exactly 0; ``T`` draws its dropout from the RNG with the same shapes in the same order).
    This is how a library trainer (sentence-transformers' ``SentenceTransformerTrainer``, which
    has no cache of its own) gets gcl's ``model.cache_frozen`` speed.

    Calls it cannot serve that way go to the encoder's own forward (counted in ``fallbacks``):
    left padding, non-zero token types (text pairs), and any of ``_UNCACHED_KWARGS``.

    Memory holds ``Σ len(x) × hidden`` numbers per distinct text (Home Depot's ~30k training
    texts: ~0.55 GB in float32) up to ``max_memory_bytes``; texts beyond it are read from the
    store (or computed again) at every step they appear in, never dropped.
    """

    def __init__(self, frozen, *, store=None, max_memory_bytes: int | None = MAX_MEMORY_BYTES) -> None:
        self.frozen = frozen
        self.store = store
        self.memory: dict[str, torch.Tensor] = {}
        self.max_memory_bytes = max_memory_bytes  # None: no limit
        self.memory_bytes = 0
        self.original = None
        self.calls = self.fallbacks = 0
        self.counts = {"read": 0, "computed": 0}  # filled by frozen_cache.hidden_states

    def install(self) -> "CachedBottomForward":
        """Replace the encoder's ``forward`` by this one (its own is kept in ``original``)."""
        auto = self.frozen.auto
        if isinstance(auto.__dict__.get("forward"), CachedBottomForward):
            raise ValueError("a cached forward is installed on this encoder already")
        self.original = auto.forward
        auto.forward = self
        return self

    def uninstall(self) -> None:
        self.frozen.auto.__dict__.pop("forward", None)

    def stats(self) -> dict:
        """Counts since install: calls, fallbacks, texts whose ``B(x)`` was computed / read from disk."""
        return {"calls": self.calls, "fallbacks": self.fallbacks, "computed": self.counts["computed"],
                "read_from_store": self.counts["read"], "in_memory": len(self.memory), "memory_bytes": self.memory_bytes}

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, return_dict=None, **kwargs):
        from transformers.modeling_outputs import BaseModelOutput

        plain = (input_ids is not None and attention_mask is not None
                 and not any(kwargs.get(k) is not None and kwargs.get(k) is not False for k in _UNCACHED_KWARGS)
                 and (token_type_ids is None or not bool(token_type_ids.ne(0).any())))
        lengths = attention_mask.sum(1) if plain else None
        if plain:
            width = input_ids.shape[1]
            plain = bool(torch.equal(attention_mask.bool(), torch.arange(width, device=attention_mask.device)[None, :]
                                     < lengths[:, None]))  # right padding only
        if not plain:
            self.fallbacks += 1
            return self.original(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                 return_dict=return_dict, **kwargs)
        self.calls += 1
        h = self.frozen.run_top(self._states(input_ids, lengths.cpu().numpy().astype(np.int64)), attention_mask)
        return BaseModelOutput(last_hidden_state=h) if return_dict is not False else (h,)

    def _states(self, input_ids: torch.Tensor, lengths: np.ndarray) -> torch.Tensor:
        """(n, width, hidden) ``B(x)`` of the rows (zeros at padding), on the encoder's device:
        from memory, else through :func:`~gcl.training.frozen_cache.hidden_states` (the store,
        else computed and stored), kept in memory while it fits."""
        from gcl.hidden_store import token_key
        from gcl.training.frozen_cache import hidden_states

        ids = input_ids.cpu()
        keys = [token_key(ids[i, :n].tolist()) for i, n in enumerate(lengths.tolist())]
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in self.memory:
                first.setdefault(k, i)
        local: dict[str, torch.Tensor] = {}  # this call's states of texts not in memory
        if first:
            rows = np.fromiter(first.values(), dtype=np.int64, count=len(first))

            def collate(codes):
                c = rows[codes]
                w = int(lengths[c].max())
                return {"input_ids": ids[torch.as_tensor(c), :w],
                        "attention_mask": (torch.arange(w)[None, :] < torch.as_tensor(lengths[c])[:, None]).long()}

            flat = hidden_states(self.frozen, [ids[i, :lengths[i]].tolist() for i in rows], lengths[rows], collate,
                                 store=self.store, batch_texts=len(rows), counts=self.counts)
            offsets = np.concatenate([[0], np.cumsum(lengths[rows])]).tolist()
            for j, k in enumerate(first):
                local[k] = flat[offsets[j]: offsets[j + 1]].clone()
                size = local[k].numel() * local[k].element_size()
                if self.max_memory_bytes is None or self.memory_bytes + size <= self.max_memory_bytes:
                    self.memory[k] = local[k]
                    self.memory_bytes += size
        dtype = next(self.frozen.bottom.parameters()).dtype
        out = torch.zeros((len(keys), input_ids.shape[1], self.frozen.auto.config.hidden_size), dtype=dtype)
        for i, (k, n) in enumerate(zip(keys, lengths.tolist())):
            out[i, :n] = self.memory[k] if k in self.memory else local[k]
        return out.to(input_ids.device)
