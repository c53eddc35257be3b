"""The wild model's backbone in float32 and in int8, side by side in one run (2 CPU cores).

    python -m bench.benchmark_int8 [--threads 2] [--rounds 15] [--batch 32] [--candidates]

Rows: ``float32`` (PyTorch, the reference), ``int8`` (the runtime path: ONNX Runtime with the checkpoint's
int8 weights, see ``detector/int8.py``) and, with ``--candidates``, the paths measured and not taken:
``int8 torch.ao`` (``torch.ao.quantization``'s dynamic int8 Linear holding the same int8 weights; deprecated)
and ``float32 onnxruntime`` (the same exported graph before its weights become int8, to tell the runtime's
gain from int8's). Single-image latency is a full ``Predictor.predict`` on a 224x224 PIL image
(preprocessing included, as in ``bench.benchmark``); throughput is ``predict_arrays`` on decoded images.
The variants are timed in turns (round-robin), so load from other jobs on the machine hits them alike;
the load average at the start and end is printed with the figures, since other jobs on 2 cores inflate
them. Needs onnx, onnxruntime and onnxscript (requirements.txt); the first run builds the int8 graph (about half a minute, then cached).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time
import warnings

import numpy as np
import torch
from PIL import Image
from torch import nn

from detector.checkpoint import INT8_SCALE, read_weights
from detector.int8 import Int8Backbone, export_float
from detector.predict import WILD_MODEL, Predictor, load


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=WILD_MODEL)
    p.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    p.add_argument("--rounds", type=int, default=15, help="single-image calls per variant (median reported)")
    p.add_argument("--batch", type=int, default=32, help="images per throughput run")
    p.add_argument("--batch-rounds", type=int, default=3, help="throughput runs per variant (median reported)")
    p.add_argument("--candidates", action="store_true", help="also time int8 torch.ao and float32 onnxruntime")
    p.add_argument("--json", action="store_true")
    return p


def torch_ao_int8(pred: Predictor) -> Predictor:
    """Candidate (a): every int8-stored Linear of the backbone as torch.ao's dynamic int8 Linear with the
    checkpoint's own int8 values and scales (per row), nothing quantised again."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    stored = read_weights(pred.source, dequantise=False)
    model = copy.deepcopy(pred.model)
    for name, module in list(model.backbone.named_modules()):
        for child_name, child in list(module.named_children()):
            key = f"backbone.{name}.{child_name}.weight".replace("..", ".")
            if isinstance(child, nn.Linear) and key + INT8_SCALE in stored:
                scale = stored[key + INT8_SCALE].double()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # quantized tensors are deprecated too (torch 2.14)
                    w = torch._make_per_channel_quantized_tensor(stored[key], scale, torch.zeros_like(scale, dtype=torch.long), 0)
                    q = DynamicInt8Linear(child.in_features, child.out_features, dtype=torch.qint8)
                    q.set_weight_bias(w, child.bias.detach())
                setattr(module, child_name, q)
    return Predictor(model, pred.record, name="int8 torch.ao")


def onnxruntime_float32(pred: Predictor) -> Predictor:
    """The exported float32 graph in ONNX Runtime (what int8 starts from)."""
    model = copy.deepcopy(pred.model)
    model.backbone = Int8Backbone(export_float(model.backbone).SerializeToString())
    model.backbone.precision = "float32"
    return Predictor(model, pred.record, name="float32 onnxruntime")


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    load_average = [round(os.getloadavg()[0], 2)]
    f32 = load(args.model, precision="float32")
    i8 = load(args.model, precision="int8")
    if i8.precision != "int8":
        raise SystemExit("the int8 backbone could not be built (see the warning above)")
    variants = {"float32": f32, "int8": i8}
    if args.candidates:
        variants["int8 torch.ao"] = torch_ao_int8(f32)
        variants["float32 onnxruntime"] = onnxruntime_float32(f32)
    rng = np.random.default_rng(0)
    size = f32.input_size
    one = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    arrays = rng.integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
    single = {k: [] for k in variants}
    rate = {k: [] for k in variants}
    for p in variants.values():  # warm-up: first calls allocate
        p.predict(one)
        p.predict(one)
    for _ in range(args.rounds):
        for k, p in variants.items():
            t = time.perf_counter()
            p.predict(one)
            single[k].append((time.perf_counter() - t) * 1000)
    for _ in range(args.batch_rounds):
        for k, p in variants.items():
            t = time.perf_counter()
            p.predict_arrays(arrays, batch_size=16)
            rate[k].append(len(arrays) / (time.perf_counter() - t))
    load_average.append(round(os.getloadavg()[0], 2))
    base_ms, base_rate = statistics.median(single["float32"]), statistics.median(rate["float32"])
    rows = []
    for k in variants:
        ms, r = statistics.median(single[k]), statistics.median(rate[k])
        rows.append({"variant": k, "threads": torch.get_num_threads(), "load_average_start_end": load_average,
                     "single_ms_median": round(ms, 1),
                     "single_ms_p90": round(float(np.percentile(single[k], 90)), 1), "images_per_s_median": round(r, 2),
                     "single_speedup": round(base_ms / ms, 2), "throughput_speedup": round(r / base_rate, 2),
                     "single_ms_all": [round(v, 1) for v in single[k]], "images_per_s_all": [round(v, 2) for v in rate[k]]})
    return rows


def main(args: argparse.Namespace) -> list[dict]:
    rows = run(args)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'variant':<20} {'threads':>7} {'1 image ms (median)':>20} {'p90':>7} {'x float32':>9} "
              f"{'images/s (median)':>18} {'x float32':>9}")
        for r in rows:
            print(f"{r['variant']:<20} {r['threads']:>7} {r['single_ms_median']:>20.1f} {r['single_ms_p90']:>7.1f} "
                  f"{r['single_speedup']:>9.2f} {r['images_per_s_median']:>18.2f} {r['throughput_speedup']:>9.2f}")
        start, end = rows[0]["load_average_start_end"]
        print(f"load average (1 min): {start} at the start, {end} at the end, on {os.cpu_count()} cores")
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
