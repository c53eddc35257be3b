"""Command line: ``python -m detector predict PATH... [--model NAME_OR_PATH] [--json]``,
``python -m detector scan SOURCE... --out RESULTS.parquet`` and ``python -m detector models``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from tqdm import tqdm

from .analysis import batch_rows
from .checkpoint import CheckpointError
from .int8 import PRECISION_ENV, PRECISIONS
from .predict import AUTO, CIFAKE_MAX_SIDE, AutoPredictor, load, shipped_models


PRECISION_HELP = (f"the wild backbone's arithmetic (default: ${PRECISION_ENV}, else the model record's "
                  "backbone_precision, else float32); int8 runs in ONNX Runtime (onnx, onnxruntime and onnxscript of requirements.txt)")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m detector", description="Tell real photographs from AI-generated images.")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="P(fake) for images, folders (recursive) and zips")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="an image, a folder or a zip")
    pr.add_argument("--model", default=None, help=f"shipped model name or checkpoint path (default: {AUTO}: "
                    f"images of at most {CIFAKE_MAX_SIDE} px a side go to the CIFAKE track, larger ones to the wild "
                    "track; each answer names its model and why)")
    pr.add_argument("--json", action="store_true", help="one JSON object per image per line (the Batch tab's row)")
    pr.add_argument("--batch-size", type=int, default=256)
    pr.add_argument("--no-evidence", action="store_true", help="skip the provenance evidence (C2PA, metadata, "
                    "watermarks) shown beside each verdict")
    pr.add_argument("--precision", choices=PRECISIONS, default=None, help=PRECISION_HELP)
    sc = sub.add_parser("scan", help="a dataset into one Parquet file (resumable; decoders run in parallel)")
    sc.add_argument("sources", nargs="+", metavar="SOURCE", help="a folder, a zip, an image or a .txt list of paths")
    sc.add_argument("--out", required=True, help="the Parquet file (a rerun resumes it)")
    sc.add_argument("--model", default=None, help=f"shipped model name or checkpoint path (default: {AUTO})")
    sc.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="decoder processes (default: one fewer than the cores; 0 decodes in this process)")
    sc.add_argument("--chunk", type=int, default=64, help="images per model batch and per Parquet part")
    sc.add_argument("--no-evidence", action="store_true", help="skip the provenance evidence")
    sc.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="run on a Ray cluster (an address such as ray://head:10001 or auto; none: start a local Ray); "
                         "needs requirements-scale.txt")
    sc.add_argument("--actors", type=int, default=2, help="with --ray: model actors (each loads the model once)")
    sc.add_argument("--precision", choices=PRECISIONS, default=None, help=PRECISION_HELP)
    sub.add_parser("models", help="list the shipped models")
    return p


def scan_command(args: argparse.Namespace) -> int:
    from .scan import scan

    try:
        if args.ray is not None:
            from .scan import scan_ray

            summary = scan_ray(args.model, args.sources, args.out, address=args.ray or None, actors=args.actors,
                               with_evidence=not args.no_evidence, precision=args.precision)
        else:
            summary = scan(load(args.model, precision=args.precision), args.sources, args.out, workers=args.workers,
                           chunk=args.chunk, with_evidence=not args.no_evidence)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{summary['images']} images in {args.out} ({summary['new']} new, {summary['skipped']} already there; "
          f"{summary['images_per_second']} images/s)")
    print("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["verdicts"].items())))
    print("models:   " + ", ".join(f"{k} {v}" for k, v in sorted(summary["models"].items())))
    return 0


def predict_command(args: argparse.Namespace) -> int:
    """Formats the rows of ``analysis.batch_rows``, the pipeline Batch uses too: the same verdict, model and reason."""
    try:
        predictor = load(args.model, precision=args.precision)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = bad = 0
    if not args.json:
        how = ("each image's model chosen by its size" if isinstance(predictor, AutoPredictor)
               else f"threshold {predictor.threshold:.2f}")
        print(f"{'p_fake':>8}  {'verdict':<9}  {'model':<9} path    ({how})")
    with tqdm(desc="predict", unit="img", file=sys.stderr, delay=2.0, mininterval=0.5) as bar:
        try:
            for rows, errors, done in batch_rows(predictor, args.paths, chunk=args.batch_size,
                                                 with_evidence=not args.no_evidence):
                for e in errors:
                    tqdm.write(f"error: {e['file']}: {e['reason']}", file=sys.stderr)
                for row in rows:
                    if args.json:
                        print(json.dumps({"path": row.pop("file"), **row}), flush=False)
                    else:
                        top = f"  [{row['evidence_strength']}: {row['evidence']}]" if row.get("evidence") else ""
                        print(f"{row['p_fake']:8.4f}  {row['verdict']:<9}  {row['model']:<9} {row['file']}{top}")
                n, bad = n + len(rows), bad + len(errors)
                bar.update(len(rows) + len(errors))
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    sys.stdout.flush()
    if bad or n == 0:
        print(f"{n} image(s) predicted, {bad} could not be read", file=sys.stderr)
    return 1 if bad or n == 0 else 0


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.command == "models":
        print(f"{AUTO}  (default: picks the track by the image's size)")
        for name in shipped_models():
            print(name)
        return 0
    try:
        return scan_command(args) if args.command == "scan" else predict_command(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
