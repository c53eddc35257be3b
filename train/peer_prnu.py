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

import logging
import os
import sys

from peer_common import arguments, score_files


def main() -> int:
    args = arguments(__doc__)
    import cv2  # a dependency of prnu
    import torch
    from prnu import ai_predictor

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = ai_predictor.Model()
    if not model.load():
        raise SystemExit(f"prnu: no weights at {model.model_path}")
    logging.getLogger().setLevel(logging.WARNING)  # prnu sets the root logger to INFO

    def score(path: str) -> tuple[str, str]:
        prob = model.predict(path)
        if prob is None:
            img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
            why = "unreadable by OpenCV" if img is None else f"smaller than 512x512: {img.shape[1]}x{img.shape[0]}"
            return "", f"refused: {why}"
        return f"{float(prob):.6f}", "ai" if prob >= 0.5 else "real"

    return score_files(args.list, args.out, score)


if __name__ == "__main__":
    sys.exit(main())
