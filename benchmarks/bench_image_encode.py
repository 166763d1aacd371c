"""Image encoding throughput of the EfficientNet-Lite0 tower on the CPU, and where the time goes.

It writes ``--images`` generated JPEGs (coloured shapes, ``--width`` x ``--height``) to a
temporary image root, then measures:

1. decoding + preprocessing alone (``ImageDataset`` through a DataLoader), workers 0 and 2;
2. the tower alone on ready (batch, 3, 224, 224) tensors, inference mode;
3. ``encode_images`` end to end, workers 0 and 2, and the share of its time spent decoding;
4. training steps on the image side of a contrastive batch (tower forward, InfoNCE against fixed
   stand-in text embeddings, backward, AdamW step), with the backbone frozen and unfrozen, in
   pairs/s. The text tower's cost is not included.

    python benchmarks/bench_image_encode.py                    # 256 images, batch 32
    python benchmarks/bench_image_encode.py --threads 1        # on a machine whose cores are busy
    python benchmarks/bench_image_encode.py --images 64 --train-steps 2   # a quick run

Needs the ``[image]`` extra. Timings depend on the machine and its load (printed in the header).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from gcl.data.images import ImageDataset, encode_images
from gcl.encoders.image import ImageTower, ImageTowerConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=int, default=500, help="generated JPEG width")
    p.add_argument("--height", type=int, default=400, help="generated JPEG height")
    p.add_argument("--train-steps", type=int, default=3, help="timed training steps per mode (after 1 warm-up)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def write_images(root: Path, n: int, size: tuple[int, int], seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(180, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(4):
            x0, y0 = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
            box = (int(x0), int(y0), int(x0 + rng.integers(40, size[0] // 2)), int(y0 + rng.integers(40, size[1] // 2)))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        name = f"{i:05d}.jpg"
        img.save(root / name, format="JPEG", quality=90)
        names.append(name)
    return names


def time_decode(names: list[str], root: Path, tower: ImageTower, batch: int, workers: int) -> float:
    ds = ImageDataset(names, root=root, spec=tower.preprocess_spec)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=ds.collate)
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - t0


def time_tower(tower: ImageTower, n: int, batch: int) -> float:
    tower.eval()
    x = torch.randn(batch, 3, 224, 224)
    with torch.inference_mode():
        tower(x[:2])  # warm-up
        t0 = time.perf_counter()
        done = 0
        while done < n:
            k = min(batch, n - done)
            tower(x[:k])
            done += k
    return time.perf_counter() - t0


def time_train(frozen: bool, batch: int, steps: int, seed: int) -> float:
    torch.manual_seed(seed)
    tower = ImageTower(ImageTowerConfig(freeze_backbone=frozen), pretrained=True).train()
    opt = torch.optim.AdamW([p for p in tower.parameters() if p.requires_grad], lr=1e-4)
    pixels = torch.randn(batch, 3, 224, 224)
    text = F.normalize(torch.randn(batch, tower.out_dim), dim=-1)  # stand-in for the text tower
    labels = torch.arange(batch)

    def step() -> None:
        img = tower(pixels)
        loss = F.cross_entropy(img @ text.T / 0.05, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n, b = args.images, args.batch_size
    print("machine")
    print(f"  platform      {platform.platform()} ({platform.machine()}), python {platform.python_version()}")
    print(f"  cpu count     {os.cpu_count()} (load average {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    print(f"  versions      torch {torch.__version__}, numpy {np.__version__}, Pillow {Image.__version__}")
    print(f"  threads       torch.get_num_threads() = {torch.get_num_threads()}")
    torch.manual_seed(args.seed)
    tower = ImageTower(ImageTowerConfig(), pretrained=True).eval()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = write_images(root, n, (args.width, args.height), args.seed)
        size_kib = sum((root / f).stat().st_size for f in names) / n / 1024
        print("data")
        print(f"  {n} JPEGs of {args.width} x {args.height} (mean {size_kib:.0f} KiB), batch {b}, "
              f"EfficientNet-Lite0 -> {tower.out_dim}-d, input 224 x 224")

        print(f"\n{'stage':<44} {'seconds':>8} {'images/s':>9}")
        decode = {}
        for w in (0, 2):
            decode[w] = time_decode(names, root, tower, b, w)
            print(f"{f'decode + preprocess, workers={w}':<44} {decode[w]:>8.2f} {n / decode[w]:>9.1f}")
        t_tower = time_tower(tower, n, b)
        print(f"{'tower forward only (inference)':<44} {t_tower:>8.2f} {n / t_tower:>9.1f}")
        for w in (0, 2):
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # every generated image must load
                t0 = time.perf_counter()
                enc = encode_images(tower, names, root=root, batch_size=b, num_workers=w)
                t = time.perf_counter() - t0
            assert enc.present.all(), enc.stats
            print(f"{f'encode_images end to end, workers={w}':<44} {t:>8.2f} {n / t:>9.1f}")
        share = decode[0] / (decode[0] + t_tower)
        print(f"\ndecode + preprocess share of single-process time: {share:.1%} "
              f"(decode {decode[0]:.2f} s vs tower {t_tower:.2f} s)")

    print(f"\n{'training step (image side), batch ' + str(b):<44} {'s/step':>8} {'pairs/s':>9}")
    for frozen in (True, False):
        t = time_train(frozen, b, args.train_steps, args.seed)
        label = f"backbone {'frozen' if frozen else 'unfrozen'} (fwd + bwd + AdamW)"
        print(f"{label:<44} {t:>8.2f} {b / t:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
