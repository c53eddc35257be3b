"""Score images with the peer detector ``sahu65`` (PyPI, MIT; its own linear probe on the same CLIP
ViT-B/16 backbone), in its own virtual environment: its pins (pydantic<2.11, pillow<11.2, numpy<2.3)
clash with Gradio's, so it is never one of our requirements.

    python3 -m venv .peer && .peer/bin/pip install sahu65==1.1.0
    .peer/bin/python train/peer_sahu65.py --list files.txt --out peer.csv

Writes ``file,p_fake,verdict`` per line (``p_fake`` = its ``ai_probability``; its verdicts are
likely_real <= 0.35 < inconclusive < 0.65 <= likely_ai). Files it refuses get an empty p_fake and the
reason as the verdict. Runs with the standard library and sahu65 only (no project imports).
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
    import sahu65

    sahu65.warm()
    files = [line.strip() for line in open(args.list, encoding="utf-8") if line.strip()]
    tmp = args.out + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "p_fake", "verdict"])
        for i, path in enumerate(files):
            try:
                d = sahu65.detect(path)
                w.writerow([path, f"{d.ai_probability:.6f}", d.verdict])
            except Exception as e:  # the peer's own errors: recorded, never fatal
                w.writerow([path, "", f"error: {type(e).__name__}: {e}"])
            if i % 200 == 0:
                print(f"{i}/{len(files)}", file=sys.stderr, flush=True)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
