"""Cache native-resolution crops of every wild image for the residual network (detector.residual).

    python -m train.residual_crops            # resumable: images already cached are skipped

Each image is decoded once, at its own size, and gives one ``.npz`` under
``$FAKESPOT_CACHE/residual_crops/`` (written atomically, so a killed run loses at most one image):

- ``eval``: the GRID x GRID inference crops, exactly as ``detector.residual.grid_crops`` cuts them for an
  upload (so out-of-fold scores are the scores a user would get);
- ``train``: ``--train-crops`` seeded training crops at random aligned positions, each perhaps taken from a
  larger region resized down to the crop (a resized repost), perhaps blurred, and always re-encoded as JPEG
  at a random quality. The same augmentation for both classes: neither file format nor size can tell them
  apart.
"""

from __future__ import annotations

import argparse
import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from tqdm import tqdm

from detector.checkpoint import atomic_write
from detector.preprocess import ImageError, load_rgb
from detector.residual import ALIGN, CROP, grid_crops, jpeg_array, padded
from train.wild_data import CACHE, read_manifest

CROPS = CACHE / "residual_crops"
QUALITIES = (65, 96)  # training JPEG quality range [low, high)


def train_crops(img: Image.Image, k: int, rng: np.random.Generator) -> np.ndarray:
    """(k, CROP, CROP, 3) uint8 augmented training crops."""
    w, h = img.size
    out = []
    for _ in range(k):
        scale = rng.uniform(0.5, 1.0) if rng.random() < 0.3 else 1.0  # region side = CROP / scale
        side = min(int(CROP / scale), w, h) if min(w, h) >= CROP else CROP
        x = int(rng.integers(0, max(0, w - side) + 1)) // ALIGN * ALIGN
        y = int(rng.integers(0, max(0, h - side) + 1)) // ALIGN * ALIGN
        region = img.crop((x, y, x + side, y + side))
        if side != CROP:
            region = region.resize((CROP, CROP), Image.Resampling.BICUBIC)
        if rng.random() < 0.1:
            region = region.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
        a = padded(np.asarray(region))[:CROP, :CROP]
        out.append(jpeg_array(np.ascontiguousarray(a), int(rng.integers(*QUALITIES))))
    return np.stack(out)


def crop_path(sha256: str, root: Path = CROPS) -> Path:
    return root / f"{sha256}.npz"


def cache_one(file: Path, sha256: str, k: int, root: Path = CROPS) -> None:
    img = load_rgb(file)
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{sha256}:residual".encode()).digest()[:8], "little"))
    ev, _ = grid_crops(img)
    buf = io.BytesIO()
    np.savez(buf, eval=ev, train=train_crops(img, k, rng), size=np.array(img.size))
    atomic_write(crop_path(sha256, root), buf.getvalue())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-crops", type=int, default=8)
    args = p.parse_args()
    CROPS.mkdir(parents=True, exist_ok=True)
    items = sorted(read_manifest(), key=lambda it: it.sha256)  # SHA-256 order: a partial run samples every source
    todo = [it for it in items if not crop_path(it.sha256).exists()]
    print(f"{len(items)} images, {len(todo)} to crop into {CROPS}")
    bad = 0
    for it in tqdm(todo, unit="img", mininterval=10):
        try:
            cache_one(it.file, it.sha256, args.train_crops)
        except (ImageError, OSError) as e:
            bad += 1
            tqdm.write(f"skipped {it.file.name}: {e}")
    print(f"done; {bad} unreadable")


if __name__ == "__main__":
    main()
