"""Combine trained checkpoints into one ensemble checkpoint (mean of logits), measured on validation.

    python -m train.ensemble --members runs/fakespot/best checkpoints/cnn --data ../shared/data/cifake_train.zip --out runs/ensemble

All members must come from the same training data and validation split (same fingerprint, seed and
--val-fraction), so the ensemble's validation figures are measured on images no member trained on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from detector.checkpoint import load_checkpoint, save_checkpoint
from detector.data import load_image_set
from detector.engine import predict_logits, sigmoid
from detector.metrics import compute_metrics
from detector.models import Ensemble, count_parameters
from detector.preprocess import to_batch
from detector.record import Record
from train.splits import train_val_split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", nargs="+", required=True, help="checkpoint paths")
    p.add_argument("--data", required=True, nargs="+", help="the members' training data")
    p.add_argument("--out", required=True, help="output checkpoint stem, e.g. runs/ensemble/best")
    args = p.parse_args()

    loaded = [load_checkpoint(m) for m in args.members]
    records = [r for _, r in loaded]
    keys = {(r.data_fingerprint, r.train_args.get("split_seed", 0), r.train_args["val_fraction"])
            for r in records}
    if len(keys) != 1:
        raise SystemExit(f"members differ in training data or validation split: {keys}")
    if len({(tuple(r.mean), tuple(r.std), r.input_size) for r in records}) != 1:
        raise SystemExit("members use different preprocessing")
    ens = Ensemble([{"arch": r.arch, "kwargs": r.arch_kwargs} for r in records])
    for slot, (model, _) in zip(ens.members, loaded):
        slot.load_state_dict(model.state_dict())

    data = load_image_set(args.data, labelled=True)
    if data.fingerprint() != records[0].data_fingerprint:
        raise SystemExit("--data is not the data the members were trained on")
    fp, split_seed, val_fraction = keys.pop()
    _, val_idx = train_val_split(data, val_fraction, split_seed)
    x = to_batch(data.images[val_idx])
    y = data.labels[val_idx]
    device = torch.device("cpu")
    named = [(f"member {r.arch} {r.arch_kwargs}", model) for r, (model, _) in zip(records, loaded)]
    measured = {label: compute_metrics(y, sigmoid(predict_logits(model, x, device)))
                for label, model in named + [("ensemble", ens)]}
    for label, m in measured.items():
        print(f"{label}: validation acc {m['accuracy']:.4f} auc {m['roc_auc']:.5f}")
    val = measured["ensemble"]
    members = [{"arch": r.arch, "kwargs": r.arch_kwargs, "checkpoint": str(path),
                "weights_sha256": r.weights_sha256, "train_seconds": r.train_seconds,
                "epoch": r.epoch, "train_args": r.train_args} for r, path in zip(records, args.members)]
    record = Record("ensemble", {"members": [{"arch": m["arch"], "kwargs": m["kwargs"]} for m in members]},
                        data_fingerprint=fp, train_args={"members": members, "split_seed": split_seed, "val_fraction": val_fraction},
                        train_seconds=sum(m["train_seconds"] or 0 for m in members),
                        parameters=count_parameters(ens), metrics={"validation": val})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out, ens, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
