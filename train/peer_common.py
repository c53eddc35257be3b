"""What every peer scorer shares (standard library only: each peer runs in its own virtual environment,
with ``train/`` on its path as the script's own folder, and imports nothing else of this project)."""

import argparse
import csv
import os
import sys
from typing import Callable


def arguments(doc: str, **extra: str) -> argparse.Namespace:
    """``--list`` (one image path per line) and ``--out`` (the CSV), plus ``extra`` options (name -> help)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, text in extra.items():
        p.add_argument(f"--{name}", default=None, help=text)
    p.add_argument("--list", required=True, help="text file: one image path per line")
    p.add_argument("--out", required=True)
    return p.parse_args()


def score_files(list_file: str, out: str, score: Callable[[str], tuple[str, str]]) -> int:
    """Write ``file,p_fake,verdict`` for every listed file, ``score(path) -> (p_fake, verdict)`` (p_fake "" when
    refused, with the reason as the verdict); the peer's own exceptions are recorded, never fatal. Written to
    a temporary file and renamed at the end, so ``out`` is whole or absent."""
    with open(list_file, encoding="utf-8") as fl:
        files = [line.strip() for line in fl if line.strip()]
    tmp = out + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "p_fake", "verdict"])
        for i, path in enumerate(files):
            try:
                w.writerow([path, *score(path)])
            except Exception as e:  # noqa: BLE001 - the peer's own errors: recorded, never fatal
                w.writerow([path, "", f"error: {type(e).__name__}: {e}"])
            if i % 200 == 0:
                print(f"{i}/{len(files)}", file=sys.stderr, flush=True)
    os.replace(tmp, out)
    return 0
