"""Throughput of the batch paths on one folder, in one run: ``predict`` (one process), the local scan
(decoder workers beside the model) and the Ray scan (a local Ray, one actor per core).

    python -m bench.benchmark_scan --folder DIR [--model wild] [--limit 400] [--precision float32 int8]

Prints images/s for each and images/s per core, the sizing rule in the README (a cluster of N such
cores scans a million images in about 1e6 / (N x per-core rate) seconds), once per backbone precision asked
for (int8 needs onnxruntime, in requirements.txt).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from detector.int8 import PRECISIONS

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", required=True)
    p.add_argument("--model", default="wild")
    p.add_argument("--limit", type=int, default=400, help="images taken from the folder (sorted)")
    p.add_argument("--precision", nargs="+", default=list(PRECISIONS), choices=PRECISIONS,
                   help="the wild backbone's precision; each gets its three rows")
    args = p.parse_args()
    from detector.data import folder_images

    files = list(folder_images(Path(args.folder)))[: args.limit]
    work = Path(tempfile.mkdtemp())
    (work / "list.txt").write_text("\n".join(map(str, files)) + "\n")
    lst, cores = str(work / "list.txt"), os.cpu_count() or 1
    py = sys.executable
    # Models load in every run (a fresh process each, as a user runs them): their load time is included.
    rows = []
    for precision in args.precision:
        common = ["--model", args.model, "--no-evidence", "--precision", precision]
        rows += [(f"{precision}: predict (one process)",
                  run([py, "-m", "detector", "predict", *map(str, files), "--json", *common])),
                 (f"{precision}: scan, local ({cores - 1} decoder workers)",
                  run([py, "-m", "detector", "scan", lst, "--out", str(work / f"a-{precision}.parquet"), *common])),
                 (f"{precision}: scan, local Ray ({cores} actors)",
                  run([py, "-m", "detector", "scan", lst, "--out", str(work / f"b-{precision}.parquet"), *common,
                       "--ray", "--actors", str(cores)]))]
    shutil.rmtree(work, ignore_errors=True)
    print(f"{len(files)} images from {args.folder}, model {args.model}, {cores} cores (model loading included):")
    for name, seconds in rows:
        rate = len(files) / seconds
        print(f"  {name:47s} {seconds:7.1f} s  {rate:6.2f} images/s  {rate / cores:6.2f} images/s per core")


if __name__ == "__main__":
    main()
