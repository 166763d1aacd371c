"""``gcl split`` writes the same bytes as before its speed-ups, on a generated Marqo-shaped table.

The digests below were recorded by running this file's ``_write_split`` under the code of commit
``f95c8e3`` (before the direct pyarrow CSV parse and the later changes to the split path). The
table has what a faster path could get wrong: text needing CSV quoting and JSON escaping
(commas, quotes, backslashes, newlines, non-ASCII), query text with surrounding whitespace,
repeated (query, document) pairs (averaged), a product whose title differs between rows (the
first kept), empty image paths, equal scores within a query (ties keep row order), a cell
``NA``. Digests depend on pyarrow's CSV number formatting: after a pyarrow upgrade, check the
files by hand against the reference writers of ``tests/test_data_marqo.py`` before re-recording.
"""

from __future__ import annotations

import hashlib

import numpy as np

from gcl.cli.main import main

GOLDEN = {
    "corpus_1.json": "3508000ac8892950aab501142da4e476f7417e74c4afeeaf575ef468459a96e2",
    "corpus_2.json": "ba8305ffb6baff58bcbbea01d7a64a146fca77a9585fcecd760451e116f0d307",
    "dev.csv": "e99f5b29116bcc8998172ae195aa83d108fe2ff0156ecd41801910111ab14e52",
    "query_0_product_id_0.csv": "06a912a30f566fcd1e3f77dad82370bd4b240349974a75a2a07b372e98eb71ab",
    "query_0_product_id_1.csv": "1cf08eb5312d39d51b67a38cc333838c2bd9d7cafb62da9524a03f732909728d",
    "query_1_product_id_0.csv": "471335bf7d0793dddbad6e1e1f0b43e7ed34ce5ad237763287570abf5e9f6bda",
    "query_1_product_id_1.csv": "d6a69a206a294b9723de458bb86c7e886453b76644b673021d77ec769c90896f",
    "splits.json": "32d97b3cf3427ed8b067a89222ad436b394697b32d858c4ba01094ebf539ba0f",
    "train.csv": "4905fa051ea29c37763c453c90143245ed11431dd52c9321c02126419accb7bb",
}


def _table_csv(path, n_queries: int = 60, n_docs: int = 400, seed: int = 7) -> None:
    """A Marqo split-CSV-shaped table (``query, product_id, title, image_local, score_linear``)."""
    rng = np.random.default_rng(seed)
    words = ["red", "oak", "shirt", 'say "hi"', "a, b", "back\\slash", "käse", "日本", "new\nline", "NA"]
    titles = [" ".join(rng.choice(words, 3)) + f" {i}" for i in range(n_docs)]
    images = ["" if i % 7 == 0 else f"images/B{i:05d}.jpg" for i in range(n_docs)]
    lines = ["query,product_id,title,image_local,score_linear"]

    def cell(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    for q in range(n_queries):
        query = ("  " if q % 11 == 0 else "") + " ".join(rng.choice(words[:8], 2)) + f" q{q}"
        docs = rng.choice(n_docs, size=int(rng.integers(5, 30)), replace=False)
        scores = np.round(rng.uniform(0, 1, len(docs)), 2)
        scores[: len(scores) // 3] = 0.5  # ties within the query
        rows = list(zip(docs, scores))
        if q % 5 == 0:
            rows.append((docs[0], 1.0))  # a repeated pair: averaged
        for d, s in rows:
            title = titles[d] + (" (variant)" if q == 3 and d == docs[1] else "")  # a conflicting title
            lines.append(",".join([cell(query), f"B{d:05d}", cell(title), images[d], repr(float(s))]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_split(tmp_path) -> dict[str, str]:
    """Run ``gcl split`` on the generated table; sha256 of every file written."""
    data = tmp_path / "pairs.csv"
    _table_csv(data)
    out = tmp_path / "out"
    argv = ["split", "--data", str(data), "--out", str(out), "--query-col", "query", "--doc-id-col", "product_id",
            "--score-col", "score_linear", "--doc-fields", "title,image_local"]
    assert main(argv) == 0
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def test_split_files_are_byte_for_byte_as_before(tmp_path):
    digests = _write_split(tmp_path)
    assert digests == GOLDEN
