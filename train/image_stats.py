"""Compute the real and fake distributions of the image statistics once, for the app's histograms.

    python -m train.image_stats --data ../shared/data/cifake_train.zip [--out assets/image_stats.json]

Statistics (``detector.stats.STATS``) are computed on each image as the model sees it (32x32 RGB), plus
the JPEG quality of each file. The output is a small JSON summary (histograms and percentiles per class),
not per-image values. About a minute for the 100,000 CIFAKE training images on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections import Counter

import numpy as np
from PIL import Image
from tqdm import tqdm

from detector.checkpoint import atomic_write_json
from detector.data import label_from_path, load_image_set, iter_sources
from detector.stats import STATS, STATS_FILE, image_stats, jpeg_quality, summarise


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Real/fake distributions of the image statistics")
    p.add_argument("--data", nargs="+", required=True, help="labelled training data: zip(s) or folder(s)")
    p.add_argument("--out", default=str(STATS_FILE), help="summary JSON (default: %(default)s)")
    p.add_argument("--bins", type=int, default=40)
    return p


def jpeg_qualities(paths: list[str]) -> dict[str, dict[str, int]]:
    """Per class, how many files have each estimated JPEG quality ('none' for non-JPEG files)."""
    counts = {"real": Counter(), "fake": Counter()}
    for name, data, err in tqdm(iter_sources(paths), desc="jpeg quality", unit="img", mininterval=1.0):
        label = label_from_path(name.split(":", 1)[-1] if ":" in name else name)
        if err is not None or label < 0:
            continue
        try:
            q = jpeg_quality(Image.open(io.BytesIO(data)))
        except Exception:  # noqa: BLE001 - an unreadable file simply has no quality
            q = None
        counts[("real", "fake")[label]][str(q) if q is not None else "none"] += 1
    return {k: dict(sorted(v.items())) for k, v in counts.items()}


def main(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    data = load_image_set(args.data, labelled=True)
    values = {name: np.empty(len(data)) for name in STATS}
    for i, img in enumerate(tqdm(data.images, desc="statistics", unit="img", mininterval=1.0)):
        for name, v in image_stats(img).items():
            values[name][i] = v
    summary = {
        "source": [str(p) for p in args.data],
        "data_fingerprint": data.fingerprint(),
        "counts": data.counts(),
        "computed_on": "the 32x32 RGB model input of each image",
        "stats": summarise(values, data.labels, bins=args.bins),
        "jpeg_quality": jpeg_qualities(args.data),
    }
    atomic_write_json(args.out, summary)
    print(json.dumps({"out": str(args.out), "images": len(data), "seconds": round(time.perf_counter() - t0, 1),
                      "medians": {n: {c: round(summary["stats"][n][c]["median"], 4) for c in ("real", "fake")}
                                  for n in STATS}}))
    return summary


if __name__ == "__main__":
    main(get_args_parser().parse_args())
