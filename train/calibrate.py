"""Calibrate shipped models: temperature scaling and a decision threshold, both fitted on validation.

    python -m train.calibrate --data ../shared/data/cifake_train.zip --test ../shared/data/cifake_test.zip \
        [--models cnn resnet50 fakespot] [--write-record]

For each model: the validation split it was trained with is carved again from the training data (same
seed and fraction, from its record); its logits there fit the temperature T (minimum log loss) and then
the threshold on calibrated P(fake) (best validation accuracy, ties nearest 0.5). Reports the expected
calibration error (15 bins), log loss and accuracy before and after on validation and on the test split,
and reliability diagrams. The test split is only measured, never used to choose. ``--write-record``
stores T and the threshold in the checkpoint record, where the CLI and the app read them; re-run
``train.evaluate --write-record test`` afterwards so the record's test figures use the new threshold.
About 3 minutes for the three shipped models on 2 cores (ResNet50 dominates).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from detector.checkpoint import update_record
from detector.data import load_image_set
from detector.engine import sigmoid
from detector.metrics import compute_metrics
from detector.predict import load, resolve_model, shipped_models
from detector.record import Record
from train.calibration import choose_threshold, expected_calibration_error, fit_temperature, reliability
from train.results import FIGURES, save_result
from train.splits import train_val_split


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Temperature scaling and threshold, fitted on validation")
    p.add_argument("--data", nargs="+", required=True, help="the training data the models were trained on")
    p.add_argument("--test", nargs="+", required=True, help="the test split (measured only)")
    p.add_argument("--models", nargs="*", default=None, help="default: every shipped model")
    p.add_argument("--write-record", action="store_true", help="store T and the threshold in each record")
    p.add_argument("--bins", type=int, default=15)
    return p


def split_of(record: Record) -> tuple[float, int]:
    ta = record.train_args
    seed = ta.get("split_seed")
    return float(ta.get("val_fraction", 0.05)), int(seed if seed is not None else ta.get("seed", 0) or 0)


def measure(y, logits, temperature: float, threshold: float, bins: int) -> dict:
    p = sigmoid(logits, temperature)
    m = compute_metrics(y, p, threshold)
    return {"accuracy": m["accuracy"], "log_loss": m["log_loss"], "brier": m["brier"], "roc_auc": m["roc_auc"],
            "ece": expected_calibration_error(y, p, bins), "reliability": reliability(y, p, bins)}


def plot(rows: dict, path) -> None:
    from detector.plots import plt, save_figure

    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.6), squeeze=False)
    for ax, (name, r) in zip(axes[0], rows.items()):
        for key, style, label in (("before", "o--", "T = 1"), ("after", "o-", f"T = {r['temperature']:.2f}")):
            rel = r["test"][key]["reliability"]
            ax.plot(rel["mean_p_fake"], rel["fraction_fake"], style, ms=3,
                    label=f"{label} (ECE {r['test'][key]['ece']:.4f})")
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set(title=f"{name} (test split)", xlabel="mean P(fake) in bin", ylabel="share of fakes")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    names = args.models or shipped_models()
    train = load_image_set(args.data, labelled=True)
    test = load_image_set(args.test, labelled=True)
    rows = {}
    for name in names:
        pred = load(name)
        frac, seed = split_of(pred.record)
        _, val_idx = train_val_split(train, frac, seed)
        yv, lv = train.labels[val_idx], pred.logits(train.images[val_idx]).astype(np.float64)
        yt, lt = test.labels, pred.logits(test.images).astype(np.float64)
        temperature = fit_temperature(lv, yv)
        threshold = choose_threshold(yv, sigmoid(lv, temperature))
        r = {"temperature": temperature, "threshold": threshold, "validation_split": {"fraction": frac, "seed": seed,
             "n": len(val_idx)}}
        for split, y, lg in (("validation", yv, lv), ("test", yt, lt)):
            r[split] = {"before": measure(y, lg, 1.0, 0.5, args.bins),
                        "after": measure(y, lg, temperature, threshold, args.bins)}
        rows[name] = r
        print(f"{name}: T {temperature:.3f}, threshold {threshold:.4f} | validation ECE {r['validation']['before']['ece']:.4f}"
              f" -> {r['validation']['after']['ece']:.4f} | test ECE {r['test']['before']['ece']:.4f} -> "
              f"{r['test']['after']['ece']:.4f}, log loss {r['test']['before']['log_loss']:.4f} -> "
              f"{r['test']['after']['log_loss']:.4f}, accuracy {r['test']['before']['accuracy']:.4f} -> "
              f"{r['test']['after']['accuracy']:.4f}", flush=True)
        if args.write_record:
            update_record(resolve_model(name), temperature=round(temperature, 4), threshold=round(threshold, 4),
                          calibration={"fitted_on": "validation", "method": "temperature scaling (min log loss); "
                                       "threshold with the best validation accuracy", **{k: r[k] for k in
                                       ("temperature", "threshold", "validation_split")},
                                       "validation_ece": [r["validation"]["before"]["ece"], r["validation"]["after"]["ece"]]})
    plot(rows, FIGURES / "calibration.png")
    path = save_result("calibration", {"models": rows, "bins": args.bins, "data": args.data, "test": args.test}, t0)
    print(json.dumps({"result": str(path), "figure": str(FIGURES / "calibration.png")}))
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
