"""Score images with the peer detector ``prnu`` (PyPI, GPL-3.0: a peer to compare with, never one of our
dependencies; a ResNet-18 on the PRNU noise residual of a 512x512 grey centre crop), in its own virtual
environment.

    python3 -m venv .prnu && .prnu/bin/pip install prnu==0.1.0
    .prnu/bin/python train/peer_prnu.py --list files.txt --out peer.csv

Writes ``file,p_fake,verdict`` per line (``p_fake`` = ``prnu.ai_predictor.Model().predict(path)``, its softmax
probability of the "ai" class, read at 0.5 as its README does; verdict ``ai`` or ``real``). It refuses
images smaller than 512 px on either side (no full 512x512 crop) and files OpenCV cannot read: those get an
empty p_fake and the reason as the verdict. Runs with the standard library and prnu only (no project imports).
"""

import argparse
import csv
import os
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--list", required=True, help="text file: one image path per line")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    import logging

    import cv2  # a dependency of prnu
    import torch
    from prnu import ai_predictor

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = ai_predictor.Model()
    if not model.load():
        raise SystemExit(f"prnu: no weights at {model.model_path}")
    logging.getLogger().setLevel(logging.WARNING)  # prnu sets the root logger to INFO
    with open(args.list, encoding="utf-8") as fl:
        files = [line.strip() for line in fl if line.strip()]
    tmp = args.out + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "p_fake", "verdict"])
        for i, path in enumerate(files):
            try:
                prob = model.predict(path)
                if prob is None:
                    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
                    why = "unreadable by OpenCV" if img is None else f"smaller than 512x512: {img.shape[1]}x{img.shape[0]}"
                    w.writerow([path, "", f"refused: {why}"])
                else:
                    w.writerow([path, f"{float(prob):.6f}", "ai" if prob >= 0.5 else "real"])
            except Exception as e:  # noqa: BLE001 - the peer's own errors: recorded, never fatal
                w.writerow([path, "", f"error: {type(e).__name__}: {e}"])
            if i % 200 == 0:
                print(f"{i}/{len(files)}", file=sys.stderr, flush=True)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
