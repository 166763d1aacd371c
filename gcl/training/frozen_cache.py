"""Frozen lower layers, and their outputs cached once per distinct text.

With ``model.freeze_layers: L`` the text tower is split at layer ``L``:

    e(x) = normalize(P(T(B(x), m), m)),     B = layers[:L] ∘ embeddings  (frozen, eval mode)
                                            T = layers[L:]               (trained)

where ``m`` is the attention mask and ``P`` the sentence-transformers modules after the
transformer (pooling, dense, normalise). ``B`` has no trainable parameter and no dropout, so
``H(x) = B(x)`` is a fixed function of the text. With ``model.cache_frozen`` the trainer computes
``H(x)`` once per distinct training text (:meth:`HiddenCache.build`; with ``model.persist_frozen``
once per frozen part and text across runs, :mod:`gcl.hidden_store`) and a step runs only ``T``
and ``P`` on the cached states. The loss is then the *same function* of the trained parameters
as with the uncached frozen-bottom forward, so it has the same value and gradient:

* a real token's output of ``T`` depends on the padded positions only through attention weights
  that the mask sets to exactly 0 (and pooling skips them), so storing only the real tokens'
  states and padding them with zeros changes nothing;
* ``T``'s dropout draws from the RNG exactly as in the uncached forward (same shapes, same
  order; ``B`` draws nothing in eval mode).

Equality holds up to float rounding of batch shapes (``tests/test_frozen_cache.py``: float64,
loss and gradients). Storing the cache in float16 (``model.cache_dtype``) halves its memory at
the price of that exactness. The cache holds only the non-padded tokens:
``Σ_texts len(x) × hidden`` numbers, e.g. 30k Home Depot texts × ~12 tokens × 384 × 4 bytes
≈ 0.55 GB in float32.
"""

from __future__ import annotations

import inspect
import json
import time
import warnings

import numpy as np
import torch
from torch import nn

from gcl.errors import ConfigError
from gcl.training.batching import TokenCache, length_chunks


class FrozenBottom:
    """The tower split at layer ``n_layers``: embeddings + ``layers[:n]`` frozen, the rest trained.

    Works with Hugging Face encoders that keep their blocks in ``encoder.layer`` (BERT, RoBERTa,
    MiniLM, ...); anything else is a :class:`ConfigError` naming ``model.freeze_layers``.
    """

    def __init__(self, model, n_layers: int, *, freeze: bool = True) -> None:
        """``freeze=False`` only views the split (evaluation: no ``requires_grad`` change)."""
        self.model = model
        self.auto = model.tower[0].auto_model
        layers = getattr(getattr(self.auto, "encoder", None), "layer", None)
        if not isinstance(layers, nn.ModuleList) or not hasattr(self.auto, "embeddings"):
            raise ConfigError(f"model.freeze_layers: the text model {type(self.auto).__name__} has no "
                              "embeddings + encoder.layer stack to split (BERT-like models only)")
        if not 0 < n_layers < len(layers):
            raise ConfigError(f"model.freeze_layers must be between 1 and {len(layers) - 1} for this "
                              f"{len(layers)}-layer model (0: train every layer), got {n_layers}")
        self.n_layers = n_layers
        self.bottom = nn.ModuleList([self.auto.embeddings, *layers[:n_layers]])
        self.top = list(layers[n_layers:])
        if freeze:
            for p in self.bottom.parameters():
                p.requires_grad_(False)
            self.eval_frozen()

    def fingerprint(self) -> str:
        """sha1 of the split depth, the configuration that shapes ``B`` and every weight of
        ``B`` (embeddings + ``layers[:n]``, names, dtypes and bytes): equal exactly when two
        models' frozen parts compute the same function of the token ids."""
        from gcl.encoders.base import state_fingerprint

        c = self.auto.config
        shape = {"layers": self.n_layers, "model_type": getattr(c, "model_type", None),
                 **{k: getattr(c, k, None) for k in ("hidden_act", "layer_norm_eps", "num_attention_heads",
                                                      "hidden_size", "position_embedding_type")}}
        return state_fingerprint(self.bottom, json.dumps(shape, sort_keys=True, default=str))

    def eval_frozen(self) -> None:
        """Frozen modules in eval mode (no dropout): call after every ``model.train()``."""
        self.bottom.eval()

    def _mask(self, mask: torch.Tensor, hidden: torch.Tensor):
        """The mask in the form the layers take (as the model's own forward builds it)."""
        make = getattr(self.auto, "_create_attention_masks", None)
        if make is not None:
            kwargs = dict(attention_mask=mask, encoder_attention_mask=None, embedding_output=hidden,
                          encoder_hidden_states=None, cache=None)
            if "position_ids" in inspect.signature(make).parameters:  # transformers >= 5.25
                kwargs["position_ids"] = None  # what the model's own forward passes without position ids
            return make(**kwargs)[0]
        return self.auto.get_extended_attention_mask(mask, mask.shape)  # older transformers

    @torch.no_grad()
    def hidden(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """``B(x)``: (n, width, hidden) states after the frozen layers, without a graph."""
        dev = self.model.device
        ids, mask = features["input_ids"].to(dev), features["attention_mask"].to(dev)
        tt = features.get("token_type_ids")
        h = self.auto.embeddings(input_ids=ids, token_type_ids=None if tt is None else tt.to(dev))
        ext = self._mask(mask, h)
        for layer in self.bottom[1:]:
            h = _hidden_of(layer(h, ext))
        return h

    def run_top(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``T(H, m)``: the trained layers on states ``H`` after the frozen ones, with a graph."""
        ext = self._mask(mask, hidden)
        h = hidden
        for layer in self.top:
            h = _hidden_of(layer(h, ext))
        return h

    def embed_hidden(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``normalize(P(T(H, m), m))``: (n, d) embeddings from cached states, with a graph."""
        mask = mask.to(hidden.device)
        features = {"token_embeddings": self.run_top(hidden, mask), "attention_mask": mask}
        for module in list(self.model.tower)[1:]:
            features = module(features)
        return torch.nn.functional.normalize(features["sentence_embedding"], dim=-1)


def _hidden_of(out):
    """A layer returns a tensor (transformers >= 5) or a tuple whose first item is it."""
    return out[0] if isinstance(out, tuple) else out


class HiddenCache:
    """``B(x)`` of every text, non-padded tokens only, in one flat (Σ lengths, hidden) tensor.

    Same interface as :class:`~gcl.training.batching.TokenCache` for the trainer: ``lengths``,
    :meth:`chunks` (length buckets) and :meth:`embed` (a batch of codes -> embeddings)."""

    def __init__(self, frozen: FrozenBottom, flat: torch.Tensor, lengths: np.ndarray, seconds: float) -> None:
        self.frozen = frozen
        self.flat = flat
        self.lengths = lengths
        self.offsets = torch.as_tensor(np.concatenate([[0], np.cumsum(lengths)[:-1]]), dtype=torch.long)
        self.build_seconds = seconds

    @classmethod
    def build(cls, frozen: FrozenBottom, tokens: TokenCache, *, dtype: torch.dtype = torch.float32,
              batch_texts: int = 256, store=None) -> "HiddenCache":
        """Run the frozen layers once over every text of ``tokens`` (length-sorted batches); with
        a :class:`gcl.hidden_store.HiddenStore`, texts it holds are read from it and the others
        computed and added to it (shared by later runs)."""
        t0 = time.perf_counter()
        flat = hidden_states(frozen, tokens.ids, tokens.lengths, tokens.collate, store=store, batch_texts=batch_texts)
        return cls(frozen, flat.to(dtype), tokens.lengths, time.perf_counter() - t0)

    @property
    def nbytes(self) -> int:
        return self.flat.numel() * self.flat.element_size()

    def chunks(self, codes: np.ndarray, chunk: int | None) -> list[np.ndarray]:
        return length_chunks(self.lengths, codes, chunk)

    def gather(self, codes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded (n, width, hidden) states (zeros at padding) and the (n, width) mask."""
        lens = torch.as_tensor(self.lengths[codes])
        width = int(lens.max()) if len(codes) else 1
        mask = torch.arange(width)[None, :] < lens[:, None]
        index = self.offsets[torch.as_tensor(codes)][:, None] + torch.arange(width)[None, :]
        dtype = next(self.frozen.model.parameters()).dtype
        out = torch.zeros((len(codes), width, self.flat.shape[1]), dtype=dtype)
        out[mask] = self.flat[index[mask]].to(dtype)
        return out, mask.long()

    def embed(self, model, codes: np.ndarray) -> torch.Tensor:
        hidden, mask = self.gather(codes)
        return self.frozen.embed_hidden(hidden.to(model.device), mask)


def hidden_states(frozen: FrozenBottom, ids: list, lengths: np.ndarray, collate, *, store=None,
                  batch_texts: int = 256, counts: dict | None = None) -> torch.Tensor:
    """``B(x)`` of every text, real tokens only: a (Σ lengths, hidden) CPU tensor in the model's
    dtype, text after text. ``ids[i]`` are text ``i``'s token ids (the store's key), ``collate(codes)``
    its padded model inputs. Texts found in ``store`` are read from it; the others (each distinct
    one once) are computed with :meth:`FrozenBottom.hidden` and written to it. ``counts``, if
    given, gets ``read`` (texts read from the store) and ``computed`` (distinct texts computed) added."""
    from gcl.hidden_store import safe_put, token_key

    n = len(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    width = frozen.auto.config.hidden_size
    dtype = next(frozen.bottom.parameters()).dtype
    flat = torch.empty((int(offsets[-1]), width), dtype=dtype)
    keys = [token_key(x) for x in ids]
    found = np.zeros(n, dtype=bool)
    if store is not None:
        found, states = store.lookup(keys, lengths)
        if found.any():
            got = torch.from_numpy(np.concatenate(states))
            if got.dtype != dtype:
                warnings.warn(f"hidden-state cache {store.path} holds {got.dtype}, the model computes in {dtype}; "
                              "computing again", stacklevel=2)
                found[:] = False
            else:
                flat[torch.as_tensor(_token_index(offsets, lengths, np.flatnonzero(found)))] = got
    first: dict[str, int] = {}
    for i in np.flatnonzero(~found).tolist():
        first.setdefault(keys[i], i)
    todo = np.fromiter(first.values(), dtype=np.int64, count=len(first))
    for pos in length_chunks(lengths, todo, batch_texts) if len(todo) else []:
        codes = todo[pos]
        features = collate(codes)
        h = frozen.hidden(features).to("cpu", dtype)
        flat[torch.as_tensor(_token_index(offsets, lengths, codes))] = h[features["attention_mask"].bool()]
    dup = np.flatnonzero(~found)
    dup = dup[~np.isin(dup, todo)]
    for i in dup.tolist():  # repeated texts: a copy of the first one's states
        j = first[keys[i]]
        flat[offsets[i]:offsets[i + 1]] = flat[offsets[j]:offsets[j + 1]]
    if len(todo):
        safe_put(store, [keys[i] for i in todo.tolist()],
                 flat[torch.as_tensor(_token_index(offsets, lengths, todo))].numpy(), lengths[todo])
    if counts is not None:
        counts["read"] = counts.get("read", 0) + int(found.sum())
        counts["computed"] = counts.get("computed", 0) + len(todo)
    return flat


def _token_index(offsets: np.ndarray, lengths: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Rows of the flat cache for the real tokens of ``codes``, row-major (text, position)."""
    return np.concatenate([np.arange(offsets[c], offsets[c] + lengths[c]) for c in codes])


CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
