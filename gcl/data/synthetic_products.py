"""A generated multimodal product-search set: rendered product images + titles + graded queries.

Each product has five attributes: ``brand`` and ``category`` (always in the title), ``colour``
(in the title only for a fraction ``title_colour_frac`` of products, always in the image), and
``pattern`` and ``shape`` (**only in the image**). Its image (Pillow, ``image_size`` pixels) is a
shape of that colour filled with that pattern on a light background, with random position,
size and background tint. A title reads ``"umbra red lamp"`` or ``"umbra lamp"``.

A query names the category and one or two of colour / pattern / shape
(``"red striped lamp"``, ``"dotted circle mug"``). A product's graded score for a query is the
number of named attributes it has (1..3). Each query judges up to ``max_judged`` products: all
full matches and the best partial ones first, then random products with one match. So a
title-only model can see category and sometimes colour, an image-only model colour, pattern and
shape but never the category, and only their fusion can rank everything.

:func:`make_product_dataset` returns a :class:`GradedDataset` whose ``image_local`` field holds
paths relative to ``root`` (the images are written under ``root/images``);
:func:`write_marqo_dataset` splits it and writes the Marqo-GS layout, and
:func:`write_parquet_split` the Parquet form with image bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gcl.data.schema import DOC_ID, QUERY_ID, SCORE, Field, FieldKind, GradedDataset

COLOURS = {
    "red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 90, 220), "yellow": (235, 200, 20),
    "purple": (130, 60, 180), "orange": (245, 130, 20), "black": (30, 30, 30), "pink": (240, 110, 180),
}  # fmt: skip
PATTERNS = ("solid", "striped", "dotted", "checked")
SHAPES = ("circle", "square", "triangle", "diamond")
CATEGORIES = ("lamp", "mug", "rug", "vase", "pillow", "clock", "bowl", "poster")
BRANDS = ("acme", "globex", "umbra", "hooli", "initech", "contoso")
VISUAL = ("colour", "pattern", "shape")


def render_product(colour: str, pattern: str, shape: str, *, size: int = 64, rng: np.random.Generator):
    """One product image (RGB ``PIL.Image``, ``size`` x ``size``)."""
    from PIL import Image, ImageDraw

    tint = tuple(int(v) for v in rng.integers(225, 256, size=3))
    img = Image.new("RGB", (size, size), tint)
    scale = rng.uniform(0.6, 0.9) * size
    cx, cy = (size / 2 + rng.uniform(-0.08, 0.08) * size for _ in range(2))
    h = scale / 2
    box = (cx - h, cy - h, cx + h, cy + h)
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    if shape == "circle":
        d.ellipse(box, fill=255)
    elif shape == "square":
        d.rectangle(box, fill=255)
    elif shape == "triangle":
        d.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=255)
    else:  # diamond
        d.polygon([(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)], fill=255)
    fill = Image.new("RGB", (size, size), COLOURS[colour])
    if pattern != "solid":
        fd = ImageDraw.Draw(fill)
        step = max(4, size // 8)
        light = (250, 250, 250)
        for a in range(0, size, step):
            for b in range(0, size, step):
                if pattern == "striped" and b == 0:
                    fd.rectangle((0, a, size, a + step // 2 - 1), fill=light)
                elif pattern == "dotted":
                    r = max(1, step // 4)
                    fd.ellipse((a + step / 2 - r, b + step / 2 - r, a + step / 2 + r, b + step / 2 + r), fill=light)
                elif pattern == "checked" and (a // step + b // step) % 2 == 0:
                    fd.rectangle((a, b, a + step - 1, b + step - 1), fill=light)
    img.paste(fill, (0, 0), mask)
    return img


def make_product_dataset(
    root: str | Path,
    *,
    n_products: int = 400,
    n_queries: int = 150,
    image_size: int = 64,
    title_colour_frac: float = 0.5,
    max_judged: int = 12,
    seed: int = 0,
    image_format: str = "png",
) -> GradedDataset:
    """Generate the set (see the module doc); images are written to ``root/images``."""
    if n_products < 8 or n_queries < 1:
        raise ValueError("make_product_dataset needs n_products >= 8 and n_queries >= 1")
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    colours, cats = list(COLOURS), list(CATEGORIES)
    attrs = pd.DataFrame({
        "brand": rng.choice(BRANDS, n_products),
        "category": rng.choice(cats, n_products),
        "colour": rng.choice(colours, n_products),
        "pattern": rng.choice(PATTERNS, n_products),
        "shape": rng.choice(SHAPES, n_products),
    })
    show_colour = rng.random(n_products) < title_colour_frac
    ids = [f"p{i:05d}" for i in range(n_products)]
    titles, paths = [], []
    for i, row in enumerate(attrs.itertuples(index=False)):
        titles.append(f"{row.brand} {row.colour} {row.category}" if show_colour[i] else f"{row.brand} {row.category}")
        rel = f"images/{ids[i]}.{image_format}"
        render_product(row.colour, row.pattern, row.shape, size=image_size, rng=rng).save(root / rel)
        paths.append(rel)
    documents = pd.DataFrame({"title": titles, "image_local": paths}, index=pd.Index(ids, name=DOC_ID))
    for col in attrs.columns:
        documents[f"attr_{col}"] = attrs[col].to_numpy()

    q_rows, j_rows = [], []
    values = {c: attrs[c].to_numpy() for c in attrs.columns}
    for qi in range(n_queries):
        target = int(rng.integers(n_products))
        named = ["category", *rng.choice(VISUAL, size=int(rng.integers(1, 3)), replace=False)]
        words = {a: values[a][target] for a in named}
        order = [a for a in ("colour", "pattern", "shape", "category") if a in words]
        text = " ".join(str(words[a]) for a in order)
        qid = f"q{qi:05d}"
        q_rows.append((qid, text))
        matched = sum((values[a] == words[a]).astype(int) for a in named)
        full = np.flatnonzero(matched == len(named))
        partial = np.flatnonzero((matched >= 2) & (matched < len(named)))
        single = np.flatnonzero(matched == 1)
        take = list(rng.permutation(full)[:max_judged])
        take += list(rng.permutation(partial)[: max(0, max_judged - len(take) - 3)])
        take += list(rng.permutation(single)[: max(1, max_judged - len(take))])
        for d in take[:max_judged]:
            j_rows.append((qid, ids[d], float(matched[d])))
    queries = pd.DataFrame(q_rows, columns=[QUERY_ID, "query"]).set_index(QUERY_ID)
    judgments = pd.DataFrame(j_rows, columns=[QUERY_ID, DOC_ID, SCORE])
    return GradedDataset(
        queries=queries, documents=documents, judgments=judgments,
        query_fields=(Field("query"),), doc_fields=(Field("title"), Field("image_local", FieldKind.IMAGE)),
        name="products", notes=[f"generated: {n_products} products, {n_queries} queries, seed {seed}"],
    ).validate()


def write_marqo_dataset(root: str | Path, *, seed: int = 0, split_seed: int = 0, **kwargs) -> Path:
    """Generate the set into ``root`` (images under ``root/images``) and write the Marqo-GS
    layout there (split CSVs, ``corpus_1.json`` / ``corpus_2.json``, ``train.csv``, ``dev.csv``)."""
    from gcl.data.splits import build_splits

    root = Path(root)
    ds = make_product_dataset(root, seed=seed, **kwargs)
    ds.documents = ds.documents[["title", "image_local"]]
    build_splits(ds, seed=split_seed).write(root)
    return root


def write_parquet_split(split_csv: str | Path, corpus_json: str | Path, root: str | Path, out: str | Path) -> Path:
    """The Parquet form of one split: the CSV's columns plus ``image`` holding each row's image bytes."""
    import json

    frame = pd.read_csv(split_csv, keep_default_na=False)
    corpus = json.loads(Path(corpus_json).read_text())
    root = Path(root)
    frame["image"] = [(root / corpus[str(d)]["image_local"]).read_bytes() for d in frame["product_id"]]
    frame.to_parquet(out, index=False)
    return Path(out)
