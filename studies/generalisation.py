"""What happens to larger images: the CIFAKE test split shown at other sizes, brought back by the app's policy.

    python -m studies.generalisation --test cifake_test.zip [--sizes 64 128 256] [--n 4000] [--write DIR]

Each test image is enlarged from 32x32 to S x S (Pillow bicubic, as a photo editor or a web page
would), saved as PNG and as JPEG (quality 90), and then read back through
``detector.preprocess.load_image``: exactly what the CLI and the app do with an upload of that size
(antialiased bicubic downscale to 32x32). Accuracy and ROC-AUC of every shipped model per size and
format, beside its figures on the untouched images. A seeded, class-balanced sample of ``--n`` test
images is used (0 = all 20,000). ``--write DIR`` also writes the enlarged images as a REAL/ and FAKE/
folder per size, which ``python -m train.evaluate --data DIR/256`` reads like any other test set.
About 3 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from detector.data import load_image_set
from detector.metrics import compute_metrics
from detector.predict import load, shipped_models
from detector.preprocess import CLASSES, load_image
from train.results import FIGURES, save_result
from train.splits import balanced


def enlarge_and_reload(images: np.ndarray, size: int, fmt: str, write: Path | None = None,
                       labels: np.ndarray | None = None) -> np.ndarray:
    """Enlarge each 32x32 image to ``size``, encode it as ``fmt``, decode it by the app's policy."""
    out = np.empty_like(images)
    for i, im in enumerate(images):
        big = Image.fromarray(im).resize((size, size), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        big.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        data = buf.getvalue()
        out[i] = load_image(data)
        if write is not None:
            d = write / str(size) / CLASSES[labels[i]].upper()
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{i:05d}.{'png' if fmt == 'PNG' else 'jpg'}").write_bytes(data)
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Shipped models on the test split enlarged to other sizes")
    p.add_argument("--test", nargs="+", required=True)
    p.add_argument("--models", nargs="*", default=None)
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256])
    p.add_argument("--formats", nargs="+", default=["PNG", "JPEG"], choices=["PNG", "JPEG"])
    p.add_argument("--n", type=int, default=4000, help="class-balanced test sample (0 = all)")
    p.add_argument("--write", default=None, help="also write the enlarged PNGs here, a REAL/FAKE folder per size")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(args: argparse.Namespace) -> dict:
    from detector.plots import plt, save_figure

    t0 = time.perf_counter()
    sample = balanced(load_image_set(args.test, labelled=True), args.n, args.seed)
    images, labels = sample.images, sample.labels
    variants = {"32 (original)": images}
    for s in tqdm(args.sizes, desc="sizes"):
        for fmt in args.formats:
            write = Path(args.write) if args.write and fmt == "PNG" else None
            variants[f"{s} {fmt}"] = enlarge_and_reload(images, s, fmt, write, labels)
    result = {"n": len(sample), "sizes": args.sizes, "formats": args.formats, "models": {}}
    for name in args.models or shipped_models():
        pred = load(name)
        result["models"][name] = {}
        for v, x in variants.items():
            m = compute_metrics(labels, pred.predict_arrays(x), pred.threshold)
            result["models"][name][v] = {k: m[k] for k in ("accuracy", "roc_auc", "real_accuracy", "fake_accuracy")}
        print(name, json.dumps({v: round(r["accuracy"], 4) for v, r in result["models"][name].items()}), flush=True)
        result["mean_abs_pixel_change"] = {v: float(np.abs(x.astype(np.int16) - images).mean()) for v, x in variants.items()}

    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = list(variants)
    for name, r in result["models"].items():
        ax.plot(range(len(names)), [r[v]["accuracy"] for v in names], "o-", label=name)
    ax.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
    ax.set(ylabel="accuracy", title="test images enlarged to S px, read back to 32 px by the app's policy",
           ylim=(0.4, 1))
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, FIGURES / "generalisation.png")
    path = save_result("generalisation", result, t0)
    print(json.dumps({"result": str(path)}))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
