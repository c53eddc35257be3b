"""Content-matched fakes: each real photo of the wild manifest passed through one tiny autoencoder.

    python -m train.tae                     # once: import the autoencoders (train/tae.py)
    python -m train.tae_twins               # every real photo; resumable, --limit N for a trial
    python -m train.wild_features --twins   # their CLIP features (and those of the crops they were made from)
    python -m train.wild_cv --twins         # the tables with and without them

A twin differs from its parent only by the autoencoder: same content, same size, same format, and for a
JPEG the parent's own quantisation tables and chroma subsampling (so its estimated quality is the parent's).
The parent is spread over the five autoencoders by its SHA-256.

Cost bounds the size. A round trip costs about 26 us per pixel on one core (7 s for 512 x 512), so a parent
of at most ``MAX_SIDE`` px each way (74% of the real photos) is twinned whole, at native size; a larger one
gives a twin of its centre region at most ``MAX_SIDE`` px each way (offsets on the 8 px JPEG grid), never a
downscale. Such a twin is smaller than its parent and shows a closer view, which a head could learn as
"close-up = fake"; so the same region of the parent is a real training image too (``crop_items``: its
features are computed on the identical region), and the pair differs by the autoencoder alone.

Output: ``$FAKESPOT_CACHE/tae_twins/<parent sha256>.<autoencoder>.<ext>`` and ``twins.csv``, one row per twin
(parent and twin SHA-256, autoencoder, size, region, quality, the parent's source, group and split).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, JpegImagePlugin
from tqdm import tqdm

from detector.checkpoint import atomic_write
from detector.preprocess import ImageError, open_image, orientation, to_rgb
from detector.stats import jpeg_quality
from train.tae import AUTOENCODERS, TAE_DIR, TinyAutoencoder, load_tae, round_trip
from train.wild_data import CACHE, WildItem, read_manifest

TWINS = CACHE / "tae_twins"
MAX_SIDE = 512  # px each way: bounds a round trip at about 7 s on one core
FIELDS = ["parent_sha256", "twin_sha256", "autoencoder", "file", "format", "width", "height", "box",
          "parent_width", "parent_height", "quality", "parent_source", "parent_group", "parent_split", "seconds"]
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def assign(sha256: str) -> str:
    """The autoencoder of a parent: spread evenly over AUTOENCODERS by the parent's SHA-256."""
    names = list(AUTOENCODERS)
    return names[int(sha256[:16], 16) % len(names)]


def crop_box(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int, int, int]:
    """The region twinned: the whole image if it fits in ``max_side`` each way, else its centre, cut to at most
    ``max_side`` each way with the offset on the 8 px JPEG grid (so the block phase is the parent's)."""
    def span(n: int) -> tuple[int, int]:
        if n <= max_side:
            return 0, n
        start = (n - max_side) // 2 // 8 * 8
        return start, start + max_side
    (x0, x1), (y0, y1) = span(width), span(height)
    return x0, y0, x1, y1


def twin_path(parent: WildItem, tae: str, root: Path = TWINS) -> Path:
    return root / f"{parent.sha256}.{tae}{parent.file.suffix.lower()}"


def encode_like(parent: Image.Image, rgb: np.ndarray) -> tuple[bytes, str]:
    """``rgb`` encoded as the parent file is: a JPEG with its quantisation tables and chroma subsampling,
    a lossless or lossy WebP, a PNG, TIFF or BMP. Returns the bytes and the quality it was written at."""
    fmt = parent.format or "PNG"
    img = Image.fromarray(rgb)
    if parent.mode in GREY_MODES:
        img = img.convert("L")
    kw: dict = {}
    if parent.info.get("icc_profile"):
        kw["icc_profile"] = parent.info["icc_profile"]
    quality = ""
    if fmt == "JPEG":
        tables = getattr(parent, "quantization", None) or {}
        quality = str(jpeg_quality(parent) or "")
        if tables and len(tables) <= (1 if img.mode == "L" else 3):
            kw["qtables"] = [tables[k] for k in sorted(tables)]
        else:  # a CMYK parent's four tables do not fit an RGB file: the estimated quality instead
            kw["quality"] = int(quality or 90)
        sampling = JpegImagePlugin.get_sampling(parent)
        if sampling >= 0 and img.mode == "RGB":
            kw["subsampling"] = sampling
        kw["progressive"] = bool(parent.info.get("progressive"))
    elif fmt == "WEBP":
        lossless = bool(parent.info.get("lossless")) or _webp_lossless(parent)
        kw["lossless"] = lossless
        if not lossless:  # a lossy WebP does not record its quality: libwebp's usual 80
            kw["quality"] = 80
        quality = "lossless" if lossless else "80 (parent's unknown)"
    elif fmt not in ("PNG", "TIFF", "BMP"):
        fmt, quality = "PNG", f"PNG (parent was {fmt})"
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue(), quality


def _webp_lossless(img: Image.Image) -> bool:
    fp = getattr(img, "filename", "")
    if not fp:
        return False
    with open(fp, "rb") as f:
        return b"VP8L" in f.read(64)


def describe(parent: WildItem, path: Path, tae: str, box: tuple[int, int, int, int], size: tuple[int, int],
             quality: str, seconds: float | str = "") -> dict:
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as twin:
        fmt, (w, h) = twin.format, twin.size
    return {"parent_sha256": parent.sha256, "twin_sha256": hashlib.sha256(data).hexdigest(), "autoencoder": tae,
            "file": path.name, "format": fmt, "width": w, "height": h, "box": " ".join(map(str, box)),
            "parent_width": size[0], "parent_height": size[1], "quality": quality, "parent_source": parent.source,
            "parent_group": parent.group, "parent_split": parent.split,
            "seconds": round(seconds, 2) if isinstance(seconds, float) else seconds}


def make_twin(parent: WildItem, model: TinyAutoencoder, tae: str, root: Path = TWINS,
              max_side: int = MAX_SIDE) -> dict:
    """Write the twin of one parent (atomically) and return its manifest row."""
    t0 = time.perf_counter()
    img = open_image(parent.file)
    rgb = to_rgb(img)
    box = crop_box(*rgb.size, max_side)
    out = round_trip(model, np.asarray(rgb.crop(box)))
    data, quality = encode_like(img, out)
    path = twin_path(parent, tae, root)
    atomic_write(path, data)
    return describe(parent, path, tae, box, rgb.size, quality, time.perf_counter() - t0)


def existing_row(parent: WildItem, tae: str, root: Path, max_side: int, rows: dict[str, dict]) -> dict | None:
    """The row of a twin already on disk (rebuilt when a run was stopped between the image and the manifest),
    or None when it must be made: missing, or of another region than this run's."""
    path = twin_path(parent, tae, root)
    if not path.exists():
        return None
    row = rows.get(parent.sha256)
    if row and row["file"] == path.name:
        return row
    with Image.open(parent.file) as img:
        size = oriented_size(img)
        quality = str(jpeg_quality(img) or "")
    box = crop_box(*size, max_side)
    with Image.open(path) as twin:
        if twin.size != (box[2] - box[0], box[3] - box[1]):
            return None
    return describe(parent, path, tae, box, size, quality)


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """The size after EXIF orientation (what to_rgb gives), without decoding the pixels."""
    w, h = img.size
    return (h, w) if orientation(img) in (5, 6, 7, 8) else (w, h)


def read_twins(path: Path = TWINS / "twins.csv") -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_twins(rows: list[dict], path: Path = TWINS / "twins.csv") -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(sorted(rows, key=lambda r: r["parent_sha256"]))
    atomic_write(path, buf.getvalue().encode())


def twin_items(parents: list[WildItem], rows: list[dict], root: Path = TWINS) -> list[WildItem]:
    """Training extras of the given parents: each twin (a fake) and, for a twin of a region, that region of
    its parent (a real, so a close-up is no sign of a twin). Each carries its parent's group and split."""
    by_sha = {p.sha256: p for p in parents}
    out = []
    for r in rows:
        p = by_sha.get(r["parent_sha256"])
        if p is None:
            continue
        out.append(WildItem(r["twin_sha256"], 1, p.source, f"tae:{r['autoencoder']}", p.split, root / r["file"],
                            p.group, parent=p.sha256))
        box = tuple(int(v) for v in r["box"].split())
        if box != (0, 0, int(r["parent_width"]), int(r["parent_height"])):
            out.append(WildItem(f"{p.sha256}-crop-{'-'.join(map(str, box))}", 0, p.source, p.generator, p.split,
                                p.file, p.group, parent=p.sha256, box=box))
    return out


def complete(extras: list[WildItem], ok: np.ndarray) -> np.ndarray:
    """``ok`` narrowed to parents whose extras are all ``ok`` (a twin of a region without that region is dropped)."""
    missing = {x.parent for x, k in zip(extras, ok) if not k}
    return np.array([bool(k) and x.parent not in missing for x, k in zip(extras, ok)], bool)


def in_training(extras: list[WildItem], training: set[str]) -> np.ndarray:
    """Which extras a fold may train on: those whose parent is one of the fold's training images. A held-out
    photo's twin (or crop) never is: its content would leak into the model that scores the photo."""
    return np.array([bool(x.parent) and x.parent in training for x in extras], bool)


def make_twins(parents: list[WildItem], out: Path = TWINS, load: Callable[[str], TinyAutoencoder] = load_tae,
               max_side: int = MAX_SIDE, limit: int = 0) -> tuple[list[dict], int]:
    """Twin every parent not twinned yet (at most ``limit`` new ones; 0: all), in the given order, keeping
    ``out/twins.csv`` current. Returns every row (earlier runs' too) and the number made now."""
    manifest = out / "twins.csv"
    rows = {r["parent_sha256"]: r for r in read_twins(manifest)}
    models: dict[str, TinyAutoencoder] = {}
    made = bad = 0
    seconds = []
    bar = tqdm(parents, unit="photo", mininterval=5)
    for parent in bar:
        tae = assign(parent.sha256)
        row = existing_row(parent, tae, out, max_side, rows)
        if row is None:
            if limit and made >= limit:
                break
            if tae not in models:
                models[tae] = load(tae)
            try:
                row = make_twin(parent, models[tae], tae, out, max_side)
            except (ImageError, OSError) as e:
                bad += 1
                tqdm.write(f"skip {parent.file.name}: {e}")
                continue
            made += 1
            seconds.append(row["seconds"])
            bar.set_postfix(s_per_twin=f"{np.mean(seconds):.2f}")
            if made % 20 == 0:  # a killed run loses at most these rows, and rebuilds them from the files
                write_twins(list({**rows, parent.sha256: row}.values()), manifest)
        rows[parent.sha256] = row
    write_twins(list(rows.values()), manifest)
    print(f"{made} twins made ({np.mean(seconds) if seconds else 0:.2f} s each), {len(rows)} in {manifest}; {bad} skipped")
    return list(rows.values()), made


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=0, help="make at most this many new twins (0: all)")
    p.add_argument("--max-side", type=int, default=MAX_SIDE, help="largest region twinned, px each way")
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    p.add_argument("--out", type=Path, default=TWINS)
    p.add_argument("--tae", type=Path, default=TAE_DIR, help="imported autoencoders (python -m train.tae)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    # SHA-256 order shuffles the sources, so a run stopped early leaves an even sample of every one.
    parents = sorted((it for it in read_manifest() if it.label == 0 and it.split in args.splits and it.file.exists()),
                     key=lambda it: it.sha256)
    make_twins(parents, args.out, lambda name: load_tae(name, args.tae), args.max_side, args.limit)


if __name__ == "__main__":
    main()
