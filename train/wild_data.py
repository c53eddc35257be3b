"""The wild track's data: the manifest of real-world images, source-disjoint splits, the views the
backbone sees (training augmentation and the format-controlled test view) and the feature cache.

Images live in ``$FAKESPOT_CACHE/wild/<sha256>.<ext>`` (default ``~/.cache/fakespot``: outside the work tree,
so a later session on the same machine finds them; rebuilt from public snapshots by ``train.build_wild``;
never committed). The manifest ``train/wild_manifest.csv`` lists them; ``train/wild_sources.json``
gives every source its split, so no source is in two splits.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from detector.checkpoint import atomic_write
from detector.preprocess import fit_to_input, load_image, load_rgb, normalize

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "train" / "wild_manifest.csv"
SOURCES = ROOT / "train" / "wild_sources.json"
# Decoded images and feature caches: never in the work tree (a fresh checkout must not lose hours of work).
CACHE = Path(os.environ.get("FAKESPOT_CACHE", Path.home() / ".cache" / "fakespot"))
IMAGES = CACHE / "wild"
FEATURES = CACHE / "wild_features"
WILD_SIZE = 224
# Class tokens cached per view: after every block, so heads on any subset train from the cache.
CACHED_LAYERS = tuple(range(1, 13))
# The format-controlled view: both classes re-encoded alike, so file format and size say nothing.
FC_SIZE, FC_QUALITY = 512, 90
# Training images kept per group (see select_training).
MAX_FAKE_PER_GROUP, MAX_REAL_PER_SOURCE = 200, 500


@dataclass
class WildItem:
    sha256: str
    label: int  # 1 = fake
    source: str
    generator: str
    split: str
    file: Path
    group: str = ""  # origin group of the source (leave-one-group-out cross-validation)
    parent: str = ""  # a derived image's real parent (train.tae_twins: a fake twin, or the crop it was made from)
    box: tuple[int, int, int, int] | None = None  # the region of ``file`` the item is (None: all of it)


def stored_ext(path: str, note: str) -> str:
    """The extension a manifest row's image is stored with: .png when the builder cropped it or cut it
    from a figure, .webp when carved from a container (``CONTAINER@OFFSET+LENGTH``), else the path's."""
    if note.startswith(("cropped", "tile")):
        return ".png"
    if "@" in path:
        return ".webp"
    return Path(path).suffix.lower() or ".img"


def read_manifest(manifest: str | os.PathLike = MANIFEST, sources: str | os.PathLike = SOURCES,
                  images: str | os.PathLike = IMAGES) -> list[WildItem]:
    """Manifest rows joined with their source's split and group; rows whose source has no split are skipped."""
    meta = {s["name"]: s for s in json.loads(Path(sources).read_text())}
    on_disk = {p.stem: p for p in Path(images).iterdir()} if Path(images).is_dir() else {}
    items = []
    with open(manifest, newline="") as f:
        for row in csv.DictReader(f):
            source = meta.get(row["source"], {})
            split = source.get("split", "")
            if not split:
                continue
            file = on_disk.get(row["sha256"], Path(images) / (row["sha256"] + stored_ext(row["path"], row.get("note", ""))))
            items.append(WildItem(row["sha256"], int(row["label"] == "fake"), row["source"],
                                  row.get("generator") or ("real" if row["label"] == "real" else "unknown"), split, file,
                                  source.get("group", "")))
    return items


def select_training(items: list[WildItem], max_per_group: int = MAX_FAKE_PER_GROUP,
                     max_real: int = MAX_REAL_PER_SOURCE) -> list[WildItem]:
    """Cap training images per group so no one scraper or generator dominates (and the 2-core CPU budget
    holds): fakes per (source, generator), reals per source. Validation and test images are all kept.
    Deterministic: lowest SHA-256 first."""
    groups: dict[tuple[str, str, int], list[WildItem]] = {}
    for it in items:
        if it.split == "train":
            groups.setdefault((it.source, it.generator, it.label), []).append(it)
    dropped = set()
    for (_, _, label), g in groups.items():
        cap = max_per_group if label == 1 else max_real
        if cap:
            dropped |= {id(it) for it in sorted(g, key=lambda i: i.sha256)[cap:]}
    return [it for it in items if id(it) not in dropped]


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def format_controlled(img: Image.Image) -> Image.Image:
    """Centre square at FC_SIZE, re-encoded as JPEG q FC_QUALITY: the same for both classes."""
    return jpeg(fit_to_input(img, FC_SIZE), FC_QUALITY)


def augmented(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A training view that removes the format and size shortcuts (applied alike to both classes).

    Either a native-resolution 224 crop (what the tile map shows the model) or a random crop of
    60-100% of the area; then perhaps a downscale (a resized repost), a blur, and a JPEG re-encode
    at a random quality. The caller fits the result to 224 as at inference.
    """
    w, h = img.size
    if min(w, h) >= WILD_SIZE and rng.random() < 0.4:
        x, y = rng.integers(0, w - WILD_SIZE + 1), rng.integers(0, h - WILD_SIZE + 1)
        img = img.crop((x, y, x + WILD_SIZE, y + WILD_SIZE))
    else:
        s = np.sqrt(rng.uniform(0.6, 1.0))
        cw, ch = max(1, int(w * s)), max(1, int(h * s))
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        img = img.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.3 and min(cw, ch) > 2 * WILD_SIZE:
            f = rng.uniform(0.5, 0.9)
            img = img.resize((max(1, int(cw * f)), max(1, int(ch * f))), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    if rng.random() < 0.2:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    if rng.random() < 0.8:
        img = jpeg(img, rng.integers(60, 99))
    return img


def view(file: str | os.PathLike, kind: str, seed: int = 0, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """(224, 224, 3) uint8 model input of one image: ``clean`` (as a user uploads it), ``fc``
    (format-controlled) or ``aug`` (a seeded training augmentation). With ``box``, of that region of the
    decoded image, as if it had been uploaded alone (a twin's parent, cropped as its twin was)."""
    if kind == "clean" and box is None:
        return load_image(file, WILD_SIZE)  # exactly what Predictor.preprocess gives at inference
    img = load_rgb(file)
    if box is not None:
        if kind != "clean":
            raise ValueError(f"a region is read in the clean view only, not {kind!r}")
        return np.array(fit_to_input(img.crop(box), WILD_SIZE), dtype=np.uint8)
    if kind == "fc":
        img = format_controlled(img)
    elif kind == "aug":
        digest = hashlib.sha256(f"{Path(file).stem}:{seed}".encode()).digest()
        img = augmented(img, np.random.default_rng(int.from_bytes(digest[:8], "little")))
    else:
        raise ValueError(f"unknown view {kind!r}; valid: clean, fc, aug")
    return np.array(fit_to_input(img, WILD_SIZE), dtype=np.uint8)


@torch.inference_mode()
def embed(backbone, arrays: np.ndarray, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """(N, 224, 224, 3) uint8 -> embeddings (N, 512) float32 and class tokens (N, 12, 768) float16."""
    x = normalize(torch.from_numpy(arrays).permute(0, 3, 1, 2), mean, std)
    e, cls = backbone.forward_tokens(x, CACHED_LAYERS)
    return e.numpy(), torch.stack(cls, 1).half().numpy()


def cache_path(sha256: str, kind: str, root: Path = FEATURES) -> Path:
    return root / kind / f"{sha256}.npz"


def save_features(path: Path, e: np.ndarray, cls: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, embed=e, cls=cls)
    atomic_write(path, buf.getvalue())


def load_features(items: list[WildItem], kind: str, root: Path = FEATURES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cached (embed, cls, present-mask) for ``items``; missing entries are zeros with mask False."""
    e = np.zeros((len(items), 512), np.float32)
    cls = np.zeros((len(items), len(CACHED_LAYERS), 768), np.float16)
    ok = np.zeros(len(items), bool)
    for i, it in enumerate(items):
        p = cache_path(it.sha256, kind, root)
        if p.exists():
            with np.load(p) as z:
                e[i], cls[i] = z["embed"], z["cls"]
            ok[i] = True
    return e, cls, ok
