"""Evaluate a model on a labelled image set: metrics.json plus confusion matrix, ROC and PR curves.

    python -m train.evaluate --model fakespot --data ../shared/data/cifake_test.zip --out runs/eval/fakespot --dedup

``--dedup`` also reports the split without the test images that duplicate training images: it takes
a cifake_duplicates.tsv (``train-test`` rows), or training data to hash; with no value it looks for
cifake_duplicates.tsv next to the first --data path.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from detector.checkpoint import atomic_write_json, update_record
from detector.data import load_image_set
from detector.metrics import compact_curves, compute_metrics
from detector.plots import plot_evaluation
from detector.predict import load, resolve_model
from train.results import git_commit
from train.splits import duplicate_mask, read_duplicate_hashes


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a CIFAKE detector", add_help=add_help)
    p.add_argument("--model", default=None, help="shipped model name or checkpoint path (default: the default model)")
    p.add_argument("--data", required=True, nargs="+", help="folder(s) or zip(s) with REAL/ and FAKE/ images of any size")
    p.add_argument("--out", required=True, help="output folder for metrics.json and the plots")
    p.add_argument("--dedup", nargs="?", const="auto", default=None, metavar="TSV_OR_TRAIN_DATA",
                   help="also report without test images duplicated in the training data")
    p.add_argument("--threshold", type=float, default=None, help="decision threshold (default: the checkpoint's)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--write-record", metavar="KEY", default=None,
                   help="store the metrics in the checkpoint's record under metrics.KEY (and KEY_dedup)")
    p.add_argument("--no-progress", action="store_true")
    return p


def known_duplicate_hashes(spec: str, data_paths: list[str]) -> set[str]:
    if spec == "auto":
        spec = str(Path(data_paths[0]).resolve().parent / "cifake_duplicates.tsv")
        if not Path(spec).exists():
            raise SystemExit(f"--dedup: no cifake_duplicates.tsv beside {data_paths[0]}; pass the tsv or the training data")
    if spec.endswith(".tsv"):
        return read_duplicate_hashes(spec)
    return set(load_image_set(spec, labelled=False, progress=False).hashes)


def main(args: argparse.Namespace) -> dict:
    stem = resolve_model(args.model)
    predictor = load(stem)
    threshold = predictor.threshold if args.threshold is None else args.threshold
    data = load_image_set(args.data, labelled=True, progress=not args.no_progress)
    p = predictor.predict_arrays(data.images, args.batch_size)
    out = Path(args.out)
    result = {
        "model": predictor.name, "checkpoint": str(stem), "data": args.data, "data_fingerprint": data.fingerprint(),
        "skipped_files": [list(e) for e in data.errors], "commit": git_commit(),
        "official": compute_metrics(data.labels, p, threshold),
    }
    result["official"]["curves"] = compact_curves(data.labels, p)
    plot_evaluation(data.labels, p, threshold, out, title=predictor.name)
    if args.dedup:
        keep = ~duplicate_mask(data, known_duplicate_hashes(args.dedup, args.data))
        result["dedup"] = compute_metrics(data.labels[keep], p[keep], threshold)
        result["dedup"]["removed"] = int((~keep).sum())
        result["dedup"]["curves"] = compact_curves(data.labels[keep], p[keep])
    atomic_write_json(out / "metrics.json", result)
    if args.write_record:
        fields = {args.write_record: result["official"]}
        if "dedup" in result:
            fields[f"{args.write_record}_dedup"] = result["dedup"]
        rec_metrics = dict(predictor.record.metrics, **fields)
        update_record(stem, metrics=rec_metrics)
    show = {k: result[k] for k in ("official", "dedup") if k in result}
    for split, m in show.items():
        print(f"{predictor.name} [{split}] n={m['n']} acc {m['accuracy']:.4f} precision {m['precision']:.4f} "
              f"recall {m['recall']:.4f} F1 {m['f1']:.4f} ROC-AUC {m['roc_auc']:.5f} AP {m['average_precision']:.5f} "
              f"real-acc {m['real_accuracy']:.4f} fake-acc {m['fake_accuracy']:.4f}")
    print(json.dumps({"metrics": str(out / "metrics.json")}))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
