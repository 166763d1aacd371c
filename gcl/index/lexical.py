"""BM25 beside a vector index: one tokenisation and one set of BM25 settings for evaluation and search.

**What is indexed.** A document's lexical text is its text fields joined by spaces: every field
whose value is a string and whose name does not start with ``image`` (image paths are not text),
in field order. :func:`table_texts` applies the same rule to a documents table (``gcl evaluate
--bm25`` and ``--hybrid``); :func:`document_text` to the stored fields of an index.

**Scoring.** BM25 as in Lucene via ``bm25s`` (:class:`BM25Params`: k1 = 1.5, b = 0.75, English
stop words, lower-cased ``\\w\\w+`` tokens, no stemming)::

    BM25(q, d) = Σ_{t ∈ q} IDF(t) · tf(t,d)·(k1 + 1) / (tf(t,d) + k1·(1 − b + b·|d|/avgdl))
    IDF(t)     = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))

Only documents sharing a term with the query (score > 0) are hits. Equal scores are ordered by
write order (earlier first), as in the vector index.

**Keeping in step.** :class:`LexicalIndex` reads the live documents of a
:class:`~gcl.index.store.VectorIndex` (its stored fields are the text) and rebuilds its BM25
structure from them *lazily*: each search first compares the vector index's
:attr:`~gcl.index.store.VectorIndex.write_version` with the one it was built at, and rebuilds if
they differ. So a deleted document never comes back and an added or replaced one is found by the
first search after the write. The cost is a full rebuild (tokenise + index every live document:
about 1 s per 30k short titles on a loaded 2-core machine) on the first lexical search after any
batch of writes; dense searches never pay it.

**Persistence.** :meth:`LexicalIndex.save` writes ``lexical/`` inside the index directory (a
temporary sibling renamed into place): the ``bm25s`` arrays, ``labels.npy`` (the document labels,
in BM25 row order) and ``lexical.json`` (format, settings). :meth:`LexicalIndex.open` uses it when
its labels are exactly the index's live labels (labels are never reused, so equal labels mean the
same documents and text), and otherwise (stale, other settings, unreadable: a warning) rebuilds at
the first search. ``gcl index build`` writes
it; a service checkpoint rewrites the index directory without it, so after writes a restarted
service rebuilds it once.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from gcl.atomic import write_atomic, write_directory_atomic
from gcl.errors import ConfigError
from gcl.index.base import check_filters, check_k, matches
from gcl.index.store import SearchHit

LEXICAL_DIR = "lexical"
LEXICAL_FILE = "lexical.json"
LABELS_FILE = "labels.npy"
FORMAT = "gcl-lexical-index"
FORMAT_VERSION = 1
log = logging.getLogger("gcl.index")


@dataclass(frozen=True)
class BM25Params:
    """BM25 settings, the one place they live (evaluation's BM25 baseline and the lexical index)."""

    k1: float = 1.5
    b: float = 0.75
    stopwords: str = "en"


def is_text_field(name: str) -> bool:
    return not str(name).startswith("image")


def document_text(fields: Mapping[str, Any]) -> str:
    """The lexical text of one stored document: its string fields (not ``image*``) joined by spaces."""
    return " ".join(v for k, v in fields.items() if isinstance(v, str) and is_text_field(k))


def table_texts(table, fields: Sequence[str] | None = None) -> list[str]:
    """The lexical text of each row of a documents/queries table (``fields``: default all text columns)."""
    import pandas as pd

    cols = list(fields) if fields else [
        c for c in table.columns
        if (pd.api.types.is_object_dtype(table[c]) or pd.api.types.is_string_dtype(table[c])) and is_text_field(c)]
    return table[cols].fillna("").astype(str).agg(" ".join, axis=1).tolist()


def tokenize(texts: Sequence[str], params: BM25Params = BM25Params(), *, ids: bool = True):
    """``bm25s`` tokens of ``texts``: a vocabulary-coded corpus (``ids=True``) or lists of strings."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords=params.stopwords, return_ids=ids, show_progress=False)


def build_bm25(texts: Sequence[str], params: BM25Params = BM25Params()):
    """A ``bm25s.BM25`` over ``texts``, or ``None`` when no text has a single token (nothing to find)."""
    import bm25s

    corpus = tokenize(texts, params)
    if not corpus.vocab or not any(len(doc) for doc in corpus.ids):
        return None
    bm = bm25s.BM25(k1=params.k1, b=params.b)
    bm.index(corpus, show_progress=False)
    return bm


def top_k(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """Row positions of the ``k`` best positive scores (score descending, position ascending)."""
    keep = scores > 0
    if allowed is not None:
        keep &= allowed
    rows = np.flatnonzero(keep)
    if len(rows) > k:
        cut = np.partition(scores[rows], len(rows) - k)[len(rows) - k]  # the k-th best score
        rows = rows[scores[rows] >= cut]  # every row tied at the cut stays in, the sort decides
    order = np.lexsort((rows, -scores[rows]))
    return rows[order][:k]


class _Snapshot:
    """The BM25 structure of one state of the vector index."""

    def __init__(self, version, labels: np.ndarray, ids: list[str], fields: list[dict], bm) -> None:
        self.version, self.labels, self.ids, self.fields, self.bm = version, labels, ids, fields, bm


class LexicalIndex:
    """BM25 search over the stored text of a :class:`~gcl.index.store.VectorIndex`, kept in step lazily.

    >>> from gcl.index.store import VectorIndex
    >>> vi = VectorIndex(dim=2)
    >>> vi.add(["a", "b"], [[1, 0], [0, 1]], [{"title": "cordless drill"}, {"title": "paint brush"}])
    >>> [h.doc_id for h in LexicalIndex(vi).search(["drill"], k=5)[0]]
    ['a']
    """

    def __init__(self, index, *, params: BM25Params = BM25Params()) -> None:
        if not hasattr(index, "live_documents"):
            raise ConfigError(f"lexical and hybrid search need a directory (faiss) index; "
                              f"{type(index).__name__} does not list its stored documents")
        self.index = index
        self.params = params
        self._snap: _Snapshot | None = None
        self._lock = threading.Lock()
        self.rebuilds = 0  # how many times the BM25 structure was (re)built from the stored documents

    # ------------------------------------------------------------------ state
    def _current(self) -> _Snapshot:
        with self._lock:
            snap = self._snap
            if snap is None or snap.version != self.index.write_version:
                version, labels, ids, fields = self.index.live_documents()
                snap = _Snapshot(version, labels, ids, fields,
                                 build_bm25([document_text(f) for f in fields], self.params))
                self._snap = snap
                self.rebuilds += 1
            return snap

    # ------------------------------------------------------------------ search
    def search(self, queries: Sequence[str], k: int, *, filters: Mapping[str, str] | None = None) -> list[list[SearchHit]]:
        """Top-``k`` BM25 hits per query text (best first; only documents sharing a term)."""
        k = check_k(k)
        filters = check_filters(filters)
        if isinstance(queries, str):
            raise ConfigError("queries must be a list of texts, not one string")
        snap = self._current()
        allowed = None
        if filters:
            allowed = np.fromiter((matches(f, filters) for f in snap.fields), dtype=bool, count=len(snap.fields))
        out = []
        for tokens in tokenize(queries, self.params, ids=False):
            if snap.bm is None or not tokens:
                out.append([])
                continue
            scores = np.asarray(snap.bm.get_scores(tokens), dtype=np.float64)
            rows = top_k(scores, k, allowed)
            out.append([SearchHit(doc_id=snap.ids[r], score=float(scores[r]), fields=dict(snap.fields[r]))
                        for r in rows.tolist()])
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``<directory>/lexical/`` atomically (temporary sibling, then rename)."""
        snap = self._current()
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "params": asdict(self.params),
                "count": len(snap.labels), "empty": snap.bm is None}

        def fill(tmp: Path) -> None:
            if snap.bm is not None:
                snap.bm.save(str(tmp), show_progress=False)
            np.save(tmp / LABELS_FILE, snap.labels)
            write_atomic(tmp / LEXICAL_FILE, lambda fh: fh.write(json.dumps(meta, indent=2).encode("utf-8")))

        return write_directory_atomic(Path(directory) / LEXICAL_DIR, fill)

    @classmethod
    def open(cls, index, directory: str | Path | None = None, *, params: BM25Params = BM25Params()) -> "LexicalIndex":
        """A lexical index over ``index``, from ``<directory>/lexical/`` when that matches the index's
        live documents and settings; otherwise it is built at the first search."""
        lexical = cls(index, params=params)
        if directory is not None:
            lexical._snap = lexical._load(Path(directory) / LEXICAL_DIR)
        return lexical

    def _load(self, path: Path) -> _Snapshot | None:
        meta_path = path / LEXICAL_FILE
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            labels = np.load(path / LABELS_FILE)
        except (OSError, ValueError) as exc:
            log.warning("%s is unreadable (%s); BM25 is rebuilt from the stored documents", path, exc)
            return None
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION \
                or meta.get("params") != asdict(self.params):
            return None  # another format or settings: rebuilt at the first search
        version, live, ids, fields = self.index.live_documents()
        if not np.array_equal(labels, live):
            return None  # written for other documents (e.g. before a service's writes): rebuild
        bm = None
        if not meta.get("empty"):
            import bm25s

            try:
                bm = bm25s.BM25.load(str(path), show_progress=False)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("%s is unreadable (%s); BM25 is rebuilt from the stored documents", path, exc)
                return None
        return _Snapshot(version, live, ids, fields, bm)
