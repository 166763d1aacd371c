"""Training throughput of a multi-field model with the EfficientNet-Lite0 image tower, frozen vs
trained, and the share of image loading (decode + preprocess in DataLoader workers) in it.

The model is the Marqo-GS setting: text queries (MiniLM, frozen, trained projection) against
image documents (EfficientNet-Lite0, ImageNet weights, ``--image-size`` pixels), trained with the
GCL loss by :class:`gcl.training.trainer.Trainer` on generated products
(:mod:`gcl.data.synthetic_products`, rendered at the tower's resize size, saved as JPEG).

* frozen backbone: the trainer pre-computes every training image's backbone features once
  (timed: images/s), then a step runs only the projection (pairs/s);
* trained backbone: each step decodes its images (DataLoader, ``--workers``) and runs the whole
  tower forward and backward; the time inside image loading is measured separately.

    python benchmarks/bench_image_train.py                  # batch 16, 224 px, 3 timed steps
    python benchmarks/bench_image_train.py --workers 2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path


def config(data: Path, out: Path, args, *, freeze: bool):
    from gcl.config import from_dict
    from gcl.training.config import TrainConfig

    return from_dict(TrainConfig, {
        "data": {"source": str(data)},
        "model": {"multifield": {
            "towers": {"text": {"model": "minilm", "freeze": True, "project": True, "max_seq_length": 16},
                       "image": {"type": "efficientnet", "freeze": freeze, "image_size": args.image_size}},
            "query_fields": [{"name": "query"}],
            "doc_fields": [{"name": "image_local", "tower": "image"}],
        }},
        "batch": {"batch_size": args.batch},
        "optim": {"steps": args.steps + 1, "warmup_steps": 1},
        "eval": {"every": -1},
        "images": {"workers": args.workers, "batch_size": 32},
        "progress": False,
        "out_dir": str(out),
    })


def measure(data: Path, args, *, freeze: bool) -> dict:
    from gcl.training import multifield as mf
    from gcl.training.trainer import Trainer

    loading = [0.0]
    original = mf.FieldInputs._load_images

    def timed(self, inp, codes):
        t = time.perf_counter()
        try:
            return original(self, inp, codes)
        finally:
            loading[0] += time.perf_counter() - t

    mf.FieldInputs._load_images = timed
    try:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            trainer = Trainer(config(data, Path(out), args, freeze=freeze))
            setup = time.perf_counter() - t0
            n_images = trainer.encoding.d_inputs.stats.loaded
            trainer.train_step()  # warm-up
            loading[0] = 0.0
            t0 = time.perf_counter()
            for _ in range(args.steps):
                trainer.train_step()
            step = (time.perf_counter() - t0) / args.steps
    finally:
        mf.FieldInputs._load_images = original
    return {"setup_s": setup, "setup_images": n_images, "step_s": step, "pairs_per_s": args.batch / step,
            "loading_s_per_step": loading[0] / args.steps}


def encode_rates(data: Path, args) -> dict:
    """images/s: decode + preprocess alone, the tower alone, and encode_images end to end."""
    import numpy as np
    import pandas as pd
    import torch

    from gcl.data.images import ImageDataset, encode_images
    from gcl.encoders.image import ImageTower, ImageTowerConfig

    values = pd.read_csv(data / "train.csv")["image_local"].drop_duplicates().tolist()[: args.encode_images]
    tower = ImageTower(ImageTowerConfig(image_size=args.image_size, resize_size=args.image_size * 8 // 7,
                                        freeze_backbone=True)).eval()
    ds = ImageDataset(values, root=data, spec=tower.preprocess_spec)
    out = {"n": len(values)}
    t = time.perf_counter()
    batches = [ds.collate([ds[i] for i in range(s, min(s + 32, len(ds)))]) for s in range(0, len(ds), 32)]
    out["decode_preprocess"] = len(values) / (time.perf_counter() - t)
    with torch.inference_mode():
        tower(batches[0].pixels[:4])
        t = time.perf_counter()
        for b in batches:
            tower(b.pixels)
    out["tower_forward"] = len(values) / (time.perf_counter() - t)
    for w in sorted({0, args.workers}):
        t = time.perf_counter()
        emb = encode_images(tower, values, root=data, batch_size=32, num_workers=w)
        out[f"encode_images_workers{w}"] = len(values) / (time.perf_counter() - t)
        assert np.isfinite(emb.embeddings).all()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--products", type=int, default=200)
    p.add_argument("--encode-images", type=int, default=96)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from gcl.data.synthetic_products import write_marqo_dataset

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "products"
        write_marqo_dataset(data, n_products=args.products, n_queries=args.products // 2,
                            image_size=args.image_size * 8 // 7, image_format="jpg")
        rates = encode_rates(data, args)
        print(f"\nencoding {rates['n']} JPEGs at {args.image_size} px (images/s):")
        for k, v in rates.items():
            if k != "n":
                print(f"  {k:28s} {v:8.1f}")
        share = (1 / rates["decode_preprocess"]) / (1 / rates["decode_preprocess"] + 1 / rates["tower_forward"])
        print(f"  data loading share of single-process encoding: {100 * share:.1f}%")
        print(f"\ntraining, batch {args.batch}, {args.steps} timed steps, DataLoader workers {args.workers}:")
        for freeze in (True, False):
            r = measure(data, args, freeze=freeze)
            label = "frozen backbone" if freeze else "trained backbone"
            extra = (f"; setup pre-computed {r['setup_images']} images' features in {r['setup_s']:.1f}s "
                     f"({r['setup_images'] / max(r['setup_s'], 1e-9):.1f} images/s incl. model load)") if freeze else ""
            print(f"  {label:17s} {r['step_s']:7.2f} s/step  {r['pairs_per_s']:7.1f} pairs/s  image loading "
                  f"{r['loading_s_per_step']:.2f} s/step ({100 * r['loading_s_per_step'] / r['step_s']:.1f}%){extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
