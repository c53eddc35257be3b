"""CPU speed of each shipped model: single-image latency and batch throughput (medians of several runs).

    python -m bench.benchmark [--models cnn fakespot] [--threads 2]

Single-image latency is a full ``Predictor.predict`` call on one 32x32 image (preprocessing included);
throughput is ``predict_arrays`` on batches of already-decoded 32x32 images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from PIL import Image

from detector.models import count_parameters
from detector.predict import load, shipped_models


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark shipped models on the CPU")
    p.add_argument("--models", nargs="*", default=None, help="names or checkpoint paths (default: all shipped)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=8, help="batches per throughput run")
    p.add_argument("--runs", type=int, default=5, help="throughput runs (median reported)")
    p.add_argument("--single-runs", type=int, default=100, help="single-image calls (median reported)")
    p.add_argument("--json", action="store_true")
    return p


def bench(name: str, args) -> dict:
    pred = load(name)
    rng = np.random.default_rng(0)
    size = pred.input_size
    # The wild track's ViT is ~1000x the CIFAKE models' work per image: smaller batches, fewer runs.
    batch, batches, single_runs = (args.batch_size, args.batches, args.single_runs) if size <= 64 else (16, 2, 20)
    arrays = rng.integers(0, 256, (batch * batches, size, size, 3), dtype=np.uint8)
    one = Image.fromarray(arrays[0])
    for _ in range(10):
        pred.predict(one)
    single = []
    for _ in range(single_runs):
        t = time.perf_counter()
        pred.predict(one)
        single.append((time.perf_counter() - t) * 1000)
    pred.predict_arrays(arrays[:batch], batch)
    rates = []
    for _ in range(args.runs):
        t = time.perf_counter()
        pred.predict_arrays(arrays, batch)
        rates.append(len(arrays) / (time.perf_counter() - t))
    return {"model": pred.name, "parameters": count_parameters(pred.model),
            "threads": torch.get_num_threads(), "single_ms_median": statistics.median(single),
            "single_ms_p90": float(np.percentile(single, 90)), "batch_size": batch, "input_size": size,
            "images_per_s_median": statistics.median(rates)}


def main(args) -> list[dict]:
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [bench(n, args) for n in (args.models or shipped_models())]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'model':<10} {'params':>11} {'threads':>7} {'1 image (ms, median)':>21} {'p90':>6} "
              f"{'batch':>6} {'images/s (median)':>18}")
        for r in rows:
            print(f"{r['model']:<10} {r['parameters']:>11,} {r['threads']:>7} {r['single_ms_median']:>21.2f} "
                  f"{r['single_ms_p90']:>6.2f} {r['batch_size']:>6} {r['images_per_s_median']:>18,.0f}")
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
