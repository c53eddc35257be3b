"""Cost of the wild track's prediction on a 12-megapixel photo, signal by signal (2 CPU cores).

    python -m bench.benchmark_fused [--runs 7] [--threads 2] [--precision float32 int8]

Makes a 4000x3000 JPEG (q90) from an example photo, then prints the median of ``--runs`` timings of:
the CLIP input (reduced-scale JPEG decode and resize), the CLIP forward pass, the residual signal (full
decode and the crops through the residual network), the whole ``Predictor.predict`` and the whole
``analysis.analyse`` with Grad-CAM and the tile map (what the Analyse tab computes). Targets (issue 19):
fused predict <= 400 ms, Analyse <= 1.5 s. Each backbone precision asked for gets a column (int8 needs
onnxruntime (requirements.txt); without it that column runs float32, headed int8?float32).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from PIL import Image

from bench.benchmark_app import median_ms
from detector.int8 import PRECISIONS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wild")
    p.add_argument("--photo", default="assets/examples/wild_real_iphone6.jpg")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                   help="backbone precisions, a column each")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from detector.predict import load

    big = Path(tempfile.mkdtemp()) / "12mp.jpg"
    Image.open(args.photo).convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(big, quality=90)
    columns = {}
    for precision in args.precision:
        pred = load(args.model, precision=precision)
        name = precision if pred.precision == precision else f"{precision}?{pred.precision}"  # fell back
        columns[name] = timings(pred, big, args.runs)
    rows = list(next(iter(columns.values())))
    print(f"{args.model} on a 4000x3000 JPEG, {args.threads} threads, median of {args.runs} (ms):")
    print(f"  {'':52s}" + "".join(f"{name:>10s}" for name in columns))
    for row in rows:
        print(f"  {row:52s}" + "".join(f"{col.get(row, float('nan')):10.1f}" for col in columns.values()))


def timings(pred, big: Path, runs: int) -> dict[str, float]:
    from detector.analysis import analyse
    from detector.predict import AutoPredictor
    from detector.preprocess import load_image, load_rgb
    from detector.residual import image_logit

    arr = load_image(big, pred.input_size)
    rows = {"CLIP input (reduced decode + resize)": median_ms(lambda: load_image(big, pred.input_size), runs),
            "CLIP forward pass": median_ms(lambda: pred.logits(arr[None]), runs)}
    if pred.residual is not None:
        rows["residual: full decode"] = median_ms(lambda: load_rgb(big), runs)
        img = load_rgb(big)
        rows["residual: crops + network"] = median_ms(lambda: image_logit(pred.residual, img), runs)
    rows["Predictor.predict, all of it" + (" (fused)" if pred.residual is not None else " (CLIP alone)")] = \
        median_ms(lambda: pred.predict(big), runs)
    router = AutoPredictor(loaded={pred.name: pred})
    explainer = router.explainer(pred)
    rows["analyse (Grad-CAM, tiles, statistics, evidence)"] = median_ms(
        lambda: analyse(pred, str(big), explainer), max(3, runs // 2))
    return rows


if __name__ == "__main__":
    main()
