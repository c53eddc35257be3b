"""Cache the CLIP backbone's features of every wild image, so heads train in seconds on the CPU.

    python -m train.wild_features                   # all splits; resumable (done files are skipped)
    python -m train.wild_features --twins           # the autoencoder twins (train.tae_twins) instead

Training images get ``--aug-views`` seeded augmentations (``aug0``, ``aug1``...; with ``--train-clean``
also the ``clean`` view);
validation and test images get ``clean`` (as uploaded) and ``fc`` (format-controlled: both classes
re-encoded as JPEG q90 at 512x512). Each entry is one small ``.npz`` written atomically, so a killed
run loses at most one batch.

With ``--twins``, the ``clean`` view of every twin and of every parent region a twin was made from (the
views train.wild_cv --twins adds to its training folds), in the same cache, keyed by the twin's SHA-256.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm import tqdm

from detector.checkpoint import load_checkpoint
from detector.preprocess import ImageError
from train.wild_data import (
    FEATURES,
    MAX_FAKE_PER_GROUP,
    MAX_REAL_PER_SOURCE,
    WildItem,
    cache_path,
    embed,
    read_manifest,
    save_features,
    select_training,
    view,
)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="checkpoints/clip_vit_b16")
    p.add_argument("--aug-views", type=int, default=1, help="augmented views per training image")
    p.add_argument("--train-clean", action="store_true", help="also the clean view of training images")
    p.add_argument("--splits", nargs="+", default=["val", "test", "train"])
    p.add_argument("--max-per-group", type=int, default=MAX_FAKE_PER_GROUP,
                   help="training fakes kept per (source, generator), chosen by SHA-256 order (0: all)")
    p.add_argument("--max-real-per-source", type=int, default=MAX_REAL_PER_SOURCE, help="training reals kept per source (0: all)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--twins", action="store_true",
                   help="the clean view of the autoencoder twins and their parents' regions (train.tae_twins)")
    p.add_argument("--limit", type=int, default=0, help="compute at most this many views (0: all)")
    return p


def twin_jobs(splits: list[str]) -> list[tuple[WildItem, str, str, int]]:
    """The clean view of every twin, and of its parent's region when it is of one, still missing; a
    parent's views side by side, parents in SHA-256 order (an early stop leaves complete pairs)."""
    from train.tae_twins import read_twins, twin_items

    extras = twin_items([it for it in read_manifest() if it.split in splits], read_twins())
    return [(it, "clean", "clean", 0) for it in sorted(extras, key=lambda x: (x.parent, x.label))
            if not cache_path(it.sha256, "clean").exists()]


def jobs(items: list[WildItem], aug_views: int, train_clean: bool) -> list[tuple[WildItem, str, str, int]]:
    """(item, view kind, cache name, seed) for every view still missing from the cache."""
    out = []
    for it in items:
        if it.split == "train":
            views = [("clean", "clean", 0)] if train_clean else []
            views += [("aug", f"aug{k}", k) for k in range(aug_views)]
        else:
            views = [("clean", "clean", 0), ("fc", "fc", 0)]
        out += [(it, kind, name, seed) for kind, name, seed in views if not cache_path(it.sha256, name).exists()]
    return out


def main(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    backbone, record = load_checkpoint(args.backbone)
    if args.twins:
        todo = twin_jobs(args.splits)
        print(f"{len(todo)} twin views to compute into {FEATURES}")
    else:
        items = select_training(read_manifest(), args.max_per_group, args.max_real_per_source)
        items = [it for it in items if it.split in args.splits]
        order = {s: i for i, s in enumerate(args.splits)}
        # Held-out splits first; within a split in SHA-256 order, i.e. shuffled across sources, so a run
        # stopped early leaves an unbiased sample of every source rather than the first few alphabetically.
        todo = sorted(jobs(items, args.aug_views, args.train_clean), key=lambda j: (order[j[0].split], j[2], j[0].sha256))
        print(f"{len(items)} images, {len(todo)} views to compute into {FEATURES}")
    if args.limit:
        todo = todo[:args.limit]
    bad = 0
    for i in tqdm(range(0, len(todo), args.batch_size), unit="batch", mininterval=10):
        batch, arrays = [], []
        for it, kind, name, seed in todo[i:i + args.batch_size]:
            try:
                arrays.append(view(it.file, kind, seed, it.box))
                batch.append((it, name))
            except (ImageError, OSError) as e:
                bad += 1
                tqdm.write(f"skip {it.file.name} ({name}): {e}")
        if not arrays:
            continue
        e, cls = embed(backbone, np.stack(arrays), record.mean, record.std)
        for j, (it, name) in enumerate(batch):
            save_features(cache_path(it.sha256, name), e[j], cls[j])
    print(f"done; {bad} views skipped")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
