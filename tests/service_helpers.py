"""Helpers shared by the service tests: a small index built with the tiny encoder, a free port, a server process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_documents(n_docs: int = 80, seed: int = 0):
    """Synthetic product documents with ``title``, ``brand`` (filterable) and, for even rows, ``image``."""
    from gcl.data.synthetic import make_synthetic

    docs = make_synthetic(n_queries=5, n_docs=n_docs, seed=seed).documents[["title"]].copy()
    docs["brand"] = [t.split()[0] for t in docs["title"]]
    docs["image"] = [f"img/{d}.png" if i % 2 == 0 else None for i, d in enumerate(docs.index)]
    return docs


def build_tiny_index(model, model_dir: Path, out: Path, docs) -> Path:
    """An exact index of ``docs`` encoded with ``model`` (fused title embedding), manifest naming ``model_dir``."""
    from gcl.index.store import VectorIndex

    index = VectorIndex(dim=model.dim, model=str(model_dir))
    fields = [{k: v for k, v in row.items() if isinstance(v, str)} for row in docs.to_dict("records")]
    index.add(list(docs.index), model.encode_documents(docs), fields)
    return index.save(out)


def write_pngs(root: Path, names, size: int = 24, titles=None) -> None:
    """Small PNGs at ``root/name``: random pixels, or (``titles``) a swatch of the colour named in each title."""
    from PIL import Image, ImageColor, ImageDraw

    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if titles is None:
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
            continue
        words = [w.lower() for w in titles[i].split()]
        colour = next((w for w in words if w in ImageColor.colormap), "grey")
        img = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(img)
        draw.ellipse([size // 8, size // 8, size - size // 8, size - size // 8], fill=colour, outline="black")
        draw.text((size // 10, size - size // 6), words[-1], fill="black")
        img.save(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], *, port: int, env_extra: dict | None = None, log_path: Path | None = None,
                 timeout: float = 120.0) -> subprocess.Popen:
    """``gcl serve ARGS --port PORT`` on 127.0.0.1 in a subprocess; returns once /health answers."""
    import httpx

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env_extra or {})}
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "gcl.cli.main", "serve", *args, "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning"], env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gcl serve exited with {proc.returncode} (log: {log_path})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"gcl serve did not answer on port {port} within {timeout}s (log: {log_path})")
