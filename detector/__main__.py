"""Command line: ``python -m detector predict PATH... [--model NAME_OR_PATH] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Iterator

import numpy as np
from tqdm import tqdm

from .checkpoint import CheckpointError
from .data import iter_sources, printable
from .predict import DEFAULT_MODEL, Predictor, load, shipped_models
from .preprocess import ImageError, load_image


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m detector", description="Tell real photographs from AI-generated images.")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="P(fake) for images, folders (recursive) and zips")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="an image, a folder or a zip")
    pr.add_argument("--model", default=None, help=f"shipped model name or checkpoint path (default: {DEFAULT_MODEL})")
    pr.add_argument("--json", action="store_true", help="one JSON object per image per line")
    pr.add_argument("--batch-size", type=int, default=256)
    sub.add_parser("models", help="list the shipped models")
    return p


def _batches(paths: list[str], predictor: Predictor, batch_size: int, errors: list) -> Iterator[tuple[list[str], np.ndarray]]:
    """Decode inputs in batches; bad files go to ``errors`` (and stderr) and the run goes on."""
    names, arrays = [], []
    for name, data, err in iter_sources(paths):
        name = printable(name)
        if err is None:
            try:
                arrays.append(load_image(data, predictor.input_size))
                names.append(name)
            except ImageError as e:
                err = str(e)
        if err is not None:
            errors.append((name, err))
            tqdm.write(f"error: {name}: {err}", file=sys.stderr)
        if len(arrays) == batch_size:
            yield names, np.stack(arrays)
            names, arrays = [], []
    if arrays:
        yield names, np.stack(arrays)


def predict_command(args: argparse.Namespace) -> int:
    try:
        predictor = load(args.model)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    errors: list[tuple[str, str]] = []
    n = 0
    if not args.json:
        print(f"{'p_fake':>8}  {'label':<5}  path    (model {predictor.name}, threshold {predictor.threshold:.2f})")
    with tqdm(desc="predict", unit="img", file=sys.stderr, delay=2.0, mininterval=0.5) as bar:
        for names, arrays in _batches(args.paths, predictor, args.batch_size, errors):
            for name, p in zip(names, predictor.predict_arrays(arrays)):
                label = predictor.label(p)
                if args.json:
                    print(json.dumps({"path": name, "p_fake": round(float(p), 6), "label": label,
                                      "model": predictor.name}), flush=False)
                else:
                    print(f"{p:8.4f}  {label:<5}  {name}")
            n += len(names)
            bar.update(len(names))
    sys.stdout.flush()
    if errors or n == 0:
        print(f"{n} image(s) predicted, {len(errors)} could not be read", file=sys.stderr)
    return 1 if errors or n == 0 else 0


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.command == "models":
        for name in shipped_models():
            print(name + ("  (default)" if name == DEFAULT_MODEL else ""))
        return 0
    try:
        return predict_command(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
