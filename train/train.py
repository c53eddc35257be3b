"""Train a detector model on a labelled image set (a folder or zip with REAL/ and FAKE/ folders).

    python -m train.train --model fakespot --data ../shared/data/cifake_train.zip --out runs/fakespot
    torchrun --nproc_per_node=2 -m train.train --model cnn --data DATA --out runs/cnn   # DDP

Writes to --out after every epoch: ``last`` (model checkpoint), ``last.state`` (optimizer, scheduler,
RNG, history: for --resume), ``best`` (best validation checkpoint so far), history.json, curves.png.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from detector.checkpoint import atomic_write_json, load_state, save_checkpoint, save_state
from detector.data import load_image_set
from detector.engine import predict_logits, sigmoid
from detector.metrics import compute_metrics
from detector.models import count_parameters, create_model, list_models
from detector.plots import plot_history
from detector.preprocess import to_batch
from detector.record import Record
from train.augment import AugmentConfig
from train.engine import resolve_amp, train_one_epoch
from train.splits import train_val_split


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a CIFAKE detector", add_help=add_help)
    p.add_argument("--model", required=True, choices=list_models(), help="architecture")
    p.add_argument("--model-kwargs", default="{}", type=json.loads, help='JSON constructor arguments, e.g. \'{"widths": [32, 64]}\'')
    p.add_argument("--data", required=True, nargs="+", help="training data: folder(s) or zip(s) with REAL/ and FAKE/")
    p.add_argument("--out", required=True, help="output folder (checkpoints, history, curves)")
    p.add_argument("--epochs", default=20, type=int)
    p.add_argument("--batch-size", default=128, type=int, help="per process")
    p.add_argument("--lr", default=2e-3, type=float, help="peak learning rate (one-cycle schedule)")
    p.add_argument("--weight-decay", default=5e-4, type=float)
    p.add_argument("--optimizer", default="adamw", choices=["adam", "adamw"])
    p.add_argument("--schedule", default="onecycle", choices=["onecycle", "cosine", "constant"])
    p.add_argument("--val-fraction", default=0.05, type=float, help="share of the training data held out for validation")
    p.add_argument("--patience", default=5, type=int, help="stop after this many epochs without a better validation loss")
    p.add_argument("--seed", default=0, type=int, help="initialisation, shuffling and augmentation")
    p.add_argument("--split-seed", default=0, type=int, help="train/validation split (keep it fixed across runs)")
    p.add_argument("--limit", default=0, type=int, help="use only this many training images (0 = all; for smoke tests)")
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    for f in fields(AugmentConfig):
        p.add_argument(f"--aug-{f.name.replace('_', '-')}", default=f.default, type=type(f.default), dest=f"aug_{f.name}")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "none"], help="mixed precision (auto: bf16 where the hardware has it)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", default=0, type=int, help="CPU threads per process (0 = torch default)")
    p.add_argument("--resume", action="store_true", help="continue from --out/last.state")
    p.add_argument("--stop-after", default=0, type=int, help="end this invocation after N epochs (resume later with --resume)")
    p.add_argument("--max-epoch-steps", default=0, type=int, help="stop each epoch after this many steps (tests)")
    p.add_argument("--no-progress", action="store_true")
    return p


def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun; returns (rank, world size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device(device)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device(device)


def main(args: argparse.Namespace) -> dict:
    rank, world, device = setup_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = resolve_amp(args.amp, device)
    out = Path(args.out)
    is_main = rank == 0
    progress = is_main and not args.no_progress
    if is_main:
        out.mkdir(parents=True, exist_ok=True)

    data = load_image_set(args.data, labelled=True, progress=progress)
    if data.errors and is_main:
        print(f"skipped {len(data.errors)} unreadable files, e.g. {data.errors[0]}")
    if args.limit:
        data = data.subset(np.random.default_rng(args.seed).permutation(len(data))[: args.limit])
    train_idx, val_idx = train_val_split(data, args.val_fraction, args.split_seed)
    images = to_batch(data.images)
    labels = torch.from_numpy(data.labels)
    tr_images, tr_labels = images[train_idx], labels[train_idx]
    va_images, va_labels = images[val_idx], labels[val_idx].numpy()
    if is_main:
        print(f"data: {len(data)} images {data.counts()} -> train {len(train_idx)}, validation {len(val_idx)}; "
              f"world size {world}, device {device}, amp {amp}, threads {torch.get_num_threads()}")

    torch.manual_seed(args.seed)
    model = create_model(args.model, **args.model_kwargs).to(device).to(memory_format=torch.channels_last)
    ddp_model = DistributedDataParallel(model) if world > 1 else model
    opt_cls = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)

    sampler = DistributedSampler(range(len(train_idx)), num_replicas=world, rank=rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    steps = len(sampler) // args.batch_size
    if args.max_epoch_steps:
        steps = min(steps, args.max_epoch_steps)
    if steps == 0:
        raise SystemExit(f"too little data: {len(sampler)} images per process for batch size {args.batch_size}")
    total = steps * args.epochs
    if args.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=total, pct_start=0.15)
    elif args.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    else:
        scheduler = None

    aug = None if args.no_augment else AugmentConfig(**{f.name: getattr(args, f"aug_{f.name}") for f in fields(AugmentConfig)})
    train_args = {k: v for k, v in vars(args).items() if k not in ("resume", "no_progress", "stop_after", "threads")}
    record = Record(args.model, args.model_kwargs, train_args=train_args, data_fingerprint=data.fingerprint(),
                        data={"train": len(train_idx), "validation": len(val_idx), **data.counts()},
                        parameters=count_parameters(model))
    history: list[dict] = []
    start_epoch, best_loss, stale, train_seconds = 0, float("inf"), 0, 0.0

    if args.resume and (out / "last.state.json").exists():
        state = load_state(out / "last.state")
        if state["data_fingerprint"] != record.data_fingerprint or state["arch"] != args.model:
            raise SystemExit(f"--resume: {out} was trained on other data or another model; use a new --out")
        if state["train_args"]["epochs"] != args.epochs or state["train_args"]["batch_size"] != args.batch_size:
            raise SystemExit(f"--resume: the run in {out} used --epochs {state['train_args']['epochs']} and "
                             f"--batch-size {state['train_args']['batch_size']}; resume with the same values")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        history, best_loss, stale = state["history"], state["best_loss"], state["stale"]
        start_epoch, train_seconds = state["epoch"] + 1, state["train_seconds"]
        if is_main:
            print(f"resumed from {out / 'last.state'} after epoch {state['epoch']}")

    # Fault injection for the tests: the process SIGKILLs itself after this many steps in all, mid-epoch,
    # to prove a killed run resumes from its last checkpoint to the same result. Unset in real use.
    kill_at = int(os.environ.get("FAKESPOT_FAULT_KILL_AT_STEP", "0"))
    gen = torch.Generator()
    end = min(args.epochs, start_epoch + args.stop_after) if args.stop_after else args.epochs
    for epoch in range(start_epoch, end):
        if stale >= args.patience:
            break
        t0 = time.perf_counter()
        # Every epoch reseeds from (seed, epoch, rank), so a resumed run repeats an uninterrupted one.
        torch.manual_seed(args.seed * 100003 + epoch * 101 + rank)
        gen.manual_seed(args.seed * 100003 + epoch * 101 + rank + 7)
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), dtype=torch.long)
        batches = list(order[: steps * args.batch_size].split(args.batch_size))
        if epoch * steps < kill_at <= (epoch + 1) * steps:
            train_one_epoch(ddp_model, optimizer, scheduler, tr_images, tr_labels, batches[: kill_at - epoch * steps],
                            device, aug, gen, amp, progress=False, desc="")
            os.kill(os.getpid(), signal.SIGKILL)
        tr = train_one_epoch(ddp_model, optimizer, scheduler, tr_images, tr_labels, batches, device, aug, gen,
                             amp, progress=progress, desc=f"epoch {epoch + 1}/{args.epochs}")
        train_seconds += time.perf_counter() - t0

        stop = torch.zeros(1)
        if is_main:
            p = sigmoid(predict_logits(model, va_images, device))
            val = compute_metrics(va_labels, p)
            row = {"epoch": epoch + 1, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
                   "val_loss": val["log_loss"], "val_accuracy": val["accuracy"], "val_roc_auc": val["roc_auc"],
                   "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
            history.append(row)
            improved = val["log_loss"] < best_loss
            best_loss, stale = (val["log_loss"], 0) if improved else (best_loss, stale + 1)
            rec = record.replace(epoch=epoch + 1, train_seconds=round(train_seconds, 1), metrics={"validation": val})
            save_checkpoint(out / "last", model, rec)
            if improved:
                save_checkpoint(out / "best", model, rec)
            save_state(out / "last.state", {
                "arch": args.model, "data_fingerprint": record.data_fingerprint, "epoch": epoch,
                "train_args": train_args,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "history": history, "best_loss": best_loss, "stale": stale, "train_seconds": train_seconds})
            atomic_write_json(out / "history.json", history)
            plot_history(history, out / "curves.png")
            print(f"epoch {epoch + 1}: train loss {tr['loss']:.4f} acc {tr['accuracy']:.4f} | val loss "
                  f"{val['log_loss']:.4f} acc {val['accuracy']:.4f} auc {val['roc_auc']:.5f} | "
                  f"{row['seconds']:.0f}s{' *' if improved else ''}", flush=True)
            stop[0] = float(stale >= args.patience)
        if world > 1:
            dist.broadcast(stop, 0)
        if stop[0]:
            if is_main:
                print(f"early stop: no better validation loss for {args.patience} epochs")
            break

    if world > 1:
        dist.destroy_process_group()
    summary = {"epochs_run": len(history), "train_seconds": round(train_seconds, 1),
               "best_val_loss": best_loss, "out": str(out)}
    if is_main:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(get_args_parser().parse_args())
