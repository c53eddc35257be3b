"""Splits, samples and de-duplication of labelled image sets (training and research only)."""

from __future__ import annotations

import os

import numpy as np
from sklearn.model_selection import train_test_split

from detector.data import ImageSet


def train_val_split(data: ImageSet, val_fraction: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, label-stratified split of indices; byte-identical files always land on the same side."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    uniq, first, inverse = np.unique(np.asarray(data.hashes), return_index=True, return_inverse=True)
    g_train, g_val = train_test_split(np.arange(len(uniq)), test_size=val_fraction, random_state=seed,
                                      stratify=data.labels[first])
    is_val = np.zeros(len(uniq), dtype=bool)
    is_val[g_val] = True
    per_image = is_val[inverse]
    return np.flatnonzero(~per_image), np.flatnonzero(per_image)


def balanced_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Seeded, class-balanced, shuffled sample of ``n`` indices (``n // 2`` per class); every index in
    order when ``n`` is 0 or covers the set. The research scripts share it, so they measure the same images."""
    if not n or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    return rng.permutation(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: n // 2] for c in (0, 1)]))


def read_duplicate_hashes(tsv: str | os.PathLike, kinds: tuple[str, ...] = ("train-test",)) -> set[str]:
    """SHA-256 hashes of the listed duplicate kinds from a cifake_duplicates.tsv file."""
    out = set()
    with open(tsv, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or line.startswith("kind\t"):
                continue
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 2 and cols[0] in kinds:
                out.add(cols[1])
    return out


def duplicate_mask(test: ImageSet, known: set[str] | ImageSet) -> np.ndarray:
    """True for each test image whose bytes also occur in ``known`` (a training set or a set of hashes)."""
    hashes = set(known.hashes) if isinstance(known, ImageSet) else known
    return np.fromiter((h in hashes for h in test.hashes), dtype=bool, count=len(test))


def drop_duplicates(test: ImageSet, known: set[str] | ImageSet) -> tuple[ImageSet, int]:
    """Remove test images whose bytes also occur in ``known``; returns the rest and how many went."""
    dup = duplicate_mask(test, known)
    return test.subset(np.flatnonzero(~dup)), int(dup.sum())


def balanced(data: ImageSet, n: int, seed: int = 0) -> ImageSet:
    """The seeded, class-balanced sample of ``balanced_sample``: what every research script measures."""
    return data.subset(balanced_sample(data.labels, n, seed))
