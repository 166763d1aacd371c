"""TREC run and qrels files: read and write them in the layout trec_eval reads.

* run: one line per retrieved document, ``qid Q0 docid rank score tag`` (6 fields);
* qrels: one line per judgment, ``qid 0 docid grade`` (4 fields; the second is the iteration,
  ignored, as in trec_eval).

Fields are separated by any whitespace; blank lines are skipped. Readers return pytrec_eval-style
dicts, ``{qid: {docid: score}}`` and ``{qid: {docid: grade}}``, which
:func:`gcl.metrics.judge_run` and ``pytrec_eval.RelevanceEvaluator`` take as they are (pytrec_eval
wants ``int`` grades: ``{q: {d: int(g) ...}}``). As in trec_eval, the rank column of a run is not
used when reading: the order is score descending, ties by document id descending.
:func:`write_run` writes ranks in exactly that order, so file ranks and evaluated ranks agree.

A malformed line raises :class:`gcl.errors.DataError` with ``source`` = the path and
``row`` = the 0-based line index (the files have no header), and the 1-based line number in the
message, e.g. ``run.txt, row 4, field 'score': line 5: score 'x' is not a number``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path


from gcl.atomic import write_atomic
from gcl.errors import DataError
from gcl.metrics.runs import trec_order

__all__ = ["read_run", "write_run", "read_qrels", "write_qrels", "trec_order", "trec_id_map", "write_trec_files"]

RUN_FIELDS = ("qid", "Q0", "docid", "rank", "score", "tag")
QRELS_FIELDS = ("qid", "iteration", "docid", "grade")


def read_run(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a TREC run file into ``{qid: {docid: score}}`` (query and document order as in file).

    Raises:
        DataError: a line without 6 fields, a rank that is not an integer, a score that is not a
            number (or NaN), or a document listed twice for the same query.
    """
    run: dict[str, dict[str, float]] = {}
    for index, fields in _lines(path, RUN_FIELDS, "qid Q0 docid rank score tag"):
        qid, _, docid, rank, score, _ = fields
        try:
            int(rank)
        except ValueError:
            raise _error(path, index, "rank", f"rank {rank!r} is not an integer") from None
        value = _number(path, index, "score", score)
        docs = run.setdefault(qid, {})
        if docid in docs:
            raise _error(path, index, "docid", f"document {docid!r} repeated for query {qid!r}")
        docs[docid] = value
    return run


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a TREC qrels file into ``{qid: {docid: grade}}``; grades are floats (``2`` -> ``2.0``).

    Raises:
        DataError: a line without 4 fields, a grade that is not a finite number, or a document
            judged twice for the same query.
    """
    qrels: dict[str, dict[str, float]] = {}
    for index, fields in _lines(path, QRELS_FIELDS, "qid 0 docid grade"):
        qid, _, docid, grade = fields
        value = _number(path, index, "grade", grade)
        if math.isinf(value):
            raise _error(path, index, "grade", f"grade {grade!r} is not finite")
        docs = qrels.setdefault(qid, {})
        if docid in docs:
            raise _error(path, index, "docid", f"document {docid!r} judged twice for query {qid!r}")
        docs[docid] = value
    return qrels


def write_run(
    path: str | os.PathLike,
    run: Mapping[str, Mapping[str, float]],
    *,
    tag: str = "gcl",
    depth: int | None = None,
) -> Path:
    """Write ``{qid: {docid: score}}`` as a TREC run; queries in sorted id order, each ranked in
    trec_eval's order (:func:`trec_order`), ranks from 1, at most ``depth`` documents per query.

    Scores are written with ``repr`` so that reading gives back the same floats.

    Raises:
        ValueError: an id or tag that is empty or holds whitespace, or a NaN score.
    """
    tag = _token(tag, "tag")
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1 or None; got {depth!r}")
    lines = []
    for qid in sorted(run, key=str):
        q = _token(qid, "query id")
        docs = {_token(d, "document id"): float(s) for d, s in run[qid].items()}
        for docid, score in docs.items():
            if math.isnan(score):
                raise ValueError(f"query {q!r}, document {docid!r}: score is NaN")
        for rank, (docid, score) in enumerate(trec_order(docs)[:depth], start=1):
            lines.append(f"{q} Q0 {docid} {rank} {score!r} {tag}\n")
    return _write(path, lines)


def write_qrels(path: str | os.PathLike, qrels: Mapping[str, Mapping[str, float]]) -> Path:
    """Write ``{qid: {docid: grade}}`` as TREC qrels, sorted by query then document id.

    Integral grades are written as integers (``3``), others with ``repr`` (``1.33``).

    Raises:
        ValueError: an id that is empty or holds whitespace, or a grade that is not finite.
    """
    lines = []
    for qid in sorted(qrels, key=str):
        q = _token(qid, "query id")
        for docid in sorted(qrels[qid], key=str):
            grade = float(qrels[qid][docid])
            if not math.isfinite(grade):
                raise ValueError(f"query {q!r}, document {docid!r}: grade {grade!r} is not finite")
            text = str(int(grade)) if grade.is_integer() else repr(grade)
            lines.append(f"{q} 0 {_token(docid, 'document id')} {text}\n")
    return _write(path, lines)


def trec_id_map(ids, prefix: str) -> dict[str, str] | None:
    """``{id: TREC id}`` when some id cannot be a TREC token (empty, or holds whitespace), else
    ``None`` (the ids are written as they are).

    The TREC ids are ``prefix`` + a zero-padded number (``q001`` .. ``q120``), numbered in code-point
    order of the original ids, so they sort -- and break score ties in trec_eval -- exactly as the
    originals do: metrics from the mapped files equal those of the original ids.
    """
    ids = sorted({str(i) for i in ids})
    if all(text and not any(c.isspace() for c in text) for text in ids):
        return None
    width = len(str(len(ids)))
    return {orig: f"{prefix}{n:0{width}d}" for n, orig in enumerate(ids, start=1)}


def write_trec_files(
    out_dir: str | os.PathLike,
    name: str,
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, float]],
    *,
    tag: str = "gcl",
) -> dict[str, Path]:
    """Write ``<name>.run`` and ``<name>.qrels`` under ``out_dir``, whatever the ids hold.

    Query or document ids that are not TREC tokens (e.g. Home Depot's query ids, which are the
    query texts) are replaced by :func:`trec_id_map`'s numbered ids, and ``<name>.trec_ids.json``
    is written beside the files: ``{"queries": {TREC id: id}, "documents": {TREC id: id}}`` with
    only the mapped kinds. Whitespace in ``tag`` becomes ``_``. Returns the written paths by kind.
    """
    out = Path(out_dir)
    qmap = trec_id_map([*run, *qrels], "q")
    dmap = trec_id_map([d for table in (run, qrels) for docs in table.values() for d in docs], "d")

    def remap(table):
        q = (lambda x: qmap[str(x)]) if qmap else str
        d = (lambda x: dmap[str(x)]) if dmap else str
        return {q(qid): {d(doc): value for doc, value in docs.items()} for qid, docs in table.items()}

    paths = {"run": write_run(out / f"{name}.run", remap(run), tag=re.sub(r"\s+", "_", str(tag)) or "gcl"),
             "qrels": write_qrels(out / f"{name}.qrels", remap(qrels))}
    mapping = {kind: {v: k for k, v in m.items()} for kind, m in (("queries", qmap), ("documents", dmap)) if m}
    if mapping:
        path = out / f"{name}.trec_ids.json"
        _write(path, [json.dumps(mapping, ensure_ascii=False, indent=1) + "\n"])
        paths["ids"] = path
    else:
        (out / f"{name}.trec_ids.json").unlink(missing_ok=True)  # a stale mapping would mislead
    return paths


# --- helpers ------------------------------------------------------------------------------------


def _lines(path, names: tuple[str, ...], layout: str):
    """Yield ``(0-based line index, fields)`` for each non-blank line of ``path``."""
    with open(path, encoding="utf-8") as f:
        try:
            for index, line in enumerate(f):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != len(names):
                    raise _error(
                        path,
                        index,
                        None,
                        f"expected {len(names)} fields '{layout}', got {len(fields)}: "
                        f"{line.strip()!r}",
                    )
                yield index, fields
        except UnicodeDecodeError as e:
            raise DataError(f"not UTF-8 text ({e.reason})", source=str(path)) from None


def _number(path, index: int, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _error(path, index, name, f"{name} {text!r} is not a number") from None
    if math.isnan(value):
        raise _error(path, index, name, f"{name} is NaN")
    return value


def _error(path, index: int, field: str | None, message: str) -> DataError:
    return DataError(f"line {index + 1}: {message}", source=str(path), row=index, field=field)


def _token(value, what: str) -> str:
    text = str(value)
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{what} {text!r} is empty or holds whitespace; TREC files cannot hold it")
    return text


def _write(path, lines: list[str]) -> Path:
    return write_atomic(path, lambda fh: fh.write("".join(lines).encode("utf-8")))
