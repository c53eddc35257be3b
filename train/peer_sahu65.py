"""Score images with the peer detector ``sahu65`` (PyPI, MIT; its own linear probe on the same CLIP
ViT-B/16 backbone), in its own virtual environment: its pins (pydantic<2.11, pillow<11.2, numpy<2.3)
clash with Gradio's, so it is never one of our requirements.

    python3 -m venv .peer && .peer/bin/pip install sahu65==1.1.0
    .peer/bin/python train/peer_sahu65.py --list files.txt --out peer.csv

Writes ``file,p_fake,verdict`` per line (``p_fake`` = its ``ai_probability``; its verdicts are
likely_real <= 0.35 < inconclusive < 0.65 <= likely_ai). Files it refuses get an empty p_fake and the
reason as the verdict. Runs with the standard library and sahu65 only (no project imports).
"""

import sys

from peer_common import arguments, score_files


def main() -> int:
    args = arguments(__doc__)
    import sahu65

    sahu65.warm()

    def score(path: str) -> tuple[str, str]:
        d = sahu65.detect(path)
        return f"{d.ai_probability:.6f}", d.verdict

    return score_files(args.list, args.out, score)


if __name__ == "__main__":
    sys.exit(main())
