"""Command line: ``python -m detector predict PATH... [--model NAME_OR_PATH] [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Iterator

import numpy as np
from tqdm import tqdm

from . import provenance
from .checkpoint import CheckpointError
from .data import iter_sources, printable
from .predict import AUTO, AutoPredictor, Predictor, load, pick, shipped_models
from .preprocess import ImageError, load_image


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m detector", description="Tell real photographs from AI-generated images.")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("predict", help="P(fake) for images, folders (recursive) and zips")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="an image, a folder or a zip")
    pr.add_argument("--model", default=None, help=f"shipped model name or checkpoint path (default: {AUTO}: "
                    "32x32-sized images go to the CIFAKE track, anything larger to the wild track)")
    pr.add_argument("--json", action="store_true", help="one JSON object per image per line")
    pr.add_argument("--batch-size", type=int, default=256)
    pr.add_argument("--no-evidence", action="store_true", help="skip the provenance evidence (C2PA, metadata, "
                    "watermarks) shown beside each verdict")
    sub.add_parser("models", help="list the shipped models")
    return p


def _batches(paths: list[str], predictor: Predictor | AutoPredictor, batch_size: int,
             errors: list, evidence: bool = True) -> Iterator[tuple[Predictor, list, list[str], np.ndarray]]:
    """Decode inputs in batches of one model each; bad files go to ``errors`` (and stderr) and the run goes on.

    Yields ``(predictor, [(reason, evidence)], names, arrays)``; with an AutoPredictor each image is routed first.
    """
    pending: dict[str, tuple[list[str], list[np.ndarray], list[str]]] = {}
    for name, data, err in iter_sources(paths):
        name = printable(name)
        if err is None:
            try:
                pred, reason = pick(predictor, data)
                array = load_image(data, pred.input_size)
                names, arrays, reasons = pending.setdefault(pred.name, ([], [], []))
                arrays.append(array)
                names.append(name)
                reasons.append((reason, provenance.gather_within(data) if evidence else None))
                if len(arrays) == batch_size:
                    yield pred, reasons, names, np.stack(arrays)
                    pending.pop(pred.name)
            except ImageError as e:
                err = str(e)
        if err is not None:
            errors.append((name, err))
            tqdm.write(f"error: {name}: {err}", file=sys.stderr)
    for model, (names, arrays, reasons) in pending.items():
        pred = predictor.model(model) if isinstance(predictor, AutoPredictor) else predictor
        yield pred, reasons, names, np.stack(arrays)


def predict_command(args: argparse.Namespace) -> int:
    try:
        predictor = load(args.model)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    errors: list[tuple[str, str]] = []
    n = 0
    if not args.json:
        how = ("each image's track chosen by its size" if isinstance(predictor, AutoPredictor)
               else f"threshold {predictor.threshold:.2f}")
        print(f"{'p_fake':>8}  {'label':<5}  {'model':<9} path    ({how})")
    with tqdm(desc="predict", unit="img", file=sys.stderr, delay=2.0, mininterval=0.5) as bar:
        try:
            for pred, reasons, names, arrays in _batches(args.paths, predictor, args.batch_size, errors,
                                                         not args.no_evidence):
                for name, (reason, ev), p in zip(names, reasons, pred.predict_arrays(arrays)):
                    label = pred.label(p)
                    if args.json:
                        out = {"path": name, "p_fake": round(float(p), 6), "label": label, "model": pred.name,
                               "threshold": pred.threshold, "reason": reason}
                        if ev is not None:
                            out["evidence"] = ev.to_dict()
                        print(json.dumps(out), flush=False)
                    else:
                        top = ev.strongest if ev is not None else None
                        print(f"{p:8.4f}  {label:<5}  {pred.name:<9} {name}" + (f"  [{top.strength}: {top.title}]"
                                                                               if top else ""))
                n += len(names)
                bar.update(len(names))
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    sys.stdout.flush()
    if errors or n == 0:
        print(f"{n} image(s) predicted, {len(errors)} could not be read", file=sys.stderr)
    return 1 if errors or n == 0 else 0


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.command == "models":
        print(f"{AUTO}  (default: picks the track by the image's size)")
        for name in shipped_models():
            print(name)
        return 0
    try:
        return predict_command(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into `head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
