"""Train the residual network (detector.residual) from scratch on cached native-resolution crops.

    python -m train.residual_crops                       # once: the crops (resumable)
    python -m train.train_residual --cv                  # leave-one-group-out: out-of-fold scores
    python -m train.train_residual --out checkpoints/residual   # the shipped network, on every source

Each epoch draws ``--samples-per-epoch`` training crops (one of an image's cached crops, flipped at
random), images sampled in proportion to train.wild_cv.sample_weights (so no source or class
dominates). An image's score is the mean logit of its GRID x GRID inference crops. Every epoch's state is
saved (atomically) under ``$FAKESPOT_CACHE`` (never in the work tree), so a killed run resumes at its last
finished epoch; ``--cv`` also skips folds already done.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from detector.checkpoint import atomic_write, load_state, resolve, save_checkpoint, save_state
from detector.record import Record
from detector.residual import CROP, GRID, QUALITY, ResidualNet, crop_logits, to_tensor
from train.residual_crops import crop_path
from train.wild_cv import CV_DIR, groups_of, sample_weights
from train.wild_data import WildItem, read_manifest


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cv", action="store_true", help="leave-one-group-out folds (out-of-fold scores to the CV cache)")
    p.add_argument("--out", default="checkpoints/residual")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--samples-per-epoch", type=int, default=8000, help="crops drawn per epoch (0: one per image)")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    return p


def load_crops(items: list[WildItem]) -> tuple[list[WildItem], np.ndarray, np.ndarray]:
    """Items with cached crops, their training crops (N, K, CROP, CROP, 3) and inference crops."""
    kept, tr, ev = [], [], []
    for it in tqdm(items, desc="crops", unit="img", mininterval=10):
        p = crop_path(it.sha256)
        if p.exists():
            with np.load(p) as z:
                tr.append(z["train"])
                ev.append(z["eval"])
            kept.append(it)
    return kept, np.stack(tr), np.stack(ev)


def fit(tr: np.ndarray, y: np.ndarray, w: np.ndarray, args, resume: Path) -> ResidualNet:
    """Train on (N, K, CROP, CROP, 3) crops; ``resume`` holds the last finished epoch's state."""
    torch.manual_seed(args.seed)
    net = ResidualNet(args.width)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    n = args.samples_per_epoch or len(y)
    steps = args.epochs * ((n + args.batch_size - 1) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps)
    start = 0
    if resolve(resume)[1].exists():
        s = load_state(resume)
        net.load_state_dict(s["net"]), opt.load_state_dict(s["opt"]), sched.load_state_dict(s["sched"])
        start = s["epoch"]
    rng = np.random.default_rng(args.seed)
    for _ in range(start):  # the same draws as an uninterrupted run
        rng.choice(len(y), n, p=w / w.sum()), rng.integers(0, tr.shape[1], n), rng.random(n)
    t = torch.from_numpy(y).float()
    for epoch in range(start, args.epochs):
        idx = rng.choice(len(y), n, p=w / w.sum())
        k = rng.integers(0, tr.shape[1], n)
        flip = rng.random(n) < 0.5
        net.train()
        total = 0.0
        for b in tqdm(range(0, n, args.batch_size), desc=f"epoch {epoch + 1}", unit="batch", mininterval=30, leave=False):
            sl = slice(b, b + args.batch_size)
            x = to_tensor(tr[idx[sl], k[sl]])
            x = torch.where(torch.from_numpy(flip[sl])[:, None, None, None], x.flip(3), x)
            loss = F.binary_cross_entropy_with_logits(net(x), t[idx[sl]])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(x)
        save_state(resume, {"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "epoch": epoch + 1})
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total / n:.4f}", flush=True)
    return net.eval()


def image_scores(net: ResidualNet, ev: np.ndarray, batch: int = 64) -> np.ndarray:
    """Mean logit over each image's inference crops: (N,) float32."""
    flat = ev.reshape(-1, *ev.shape[2:])
    logits = np.concatenate([crop_logits(net, flat[i:i + batch * GRID * GRID]) for i in range(0, len(flat), batch * GRID * GRID)])
    return logits.reshape(len(ev), -1).mean(1)


def cross_validate(items, tr, ev, args) -> None:
    y, g, w = np.array([it.label for it in items]), np.array([it.group for it in items]), sample_weights(items)
    shas = np.array([it.sha256 for it in items])
    fold_dir = CV_DIR / "residual"
    for grp in groups_of(items):
        done = fold_dir / f"{grp}.npz"
        if done.exists():
            continue
        m = g != grp
        t0 = time.time()
        net = fit(tr[m], y[m], w[m], args, fold_dir / f"{grp}.state")
        s = image_scores(net, ev[~m])
        buf = io.BytesIO()
        np.savez(buf, sha256=shas[~m], logit=s)
        atomic_write(done, buf.getvalue())
        yg = y[~m]
        auc = roc_auc_score(yg, s) if 0 < yg.sum() < len(yg) else float("nan")  # one-class groups: see wild_cv
        print(f"held out {grp}: {len(yg)} images, AUC within the group {auc:.4f} ({time.time() - t0:.0f} s)", flush=True)
    parts = [np.load(fold_dir / f"{grp}.npz") for grp in groups_of(items)]
    buf = io.BytesIO()
    np.savez(buf, sha256=np.concatenate([z["sha256"] for z in parts]), logit=np.concatenate([z["logit"] for z in parts]))
    atomic_write(CV_DIR / "residual_oof.npz", buf.getvalue())
    print(f"wrote {CV_DIR / 'residual_oof.npz'}")


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    t0 = time.time()
    items, tr, ev = load_crops(read_manifest())
    print(f"{len(items)} images with crops ({sum(it.label for it in items)} fake), training crops {tr.shape}")
    if args.cv:
        cross_validate(items, tr, ev, args)
        return
    y, w = np.array([it.label for it in items]), sample_weights(items)
    net = fit(tr, y, w, args, CV_DIR.parent / "train_state" / f"{Path(args.out).name}.state")  # outside the work tree
    record = Record("residual", {"width": args.width}, input_size=CROP, mean=[0.0] * 3, std=[1.0] * 3,
                        name=Path(args.out).name, track="wild", kind="signal",
                        description="Small CNN on up-sampling (NPR) residuals of native-resolution crops",
                        crops={"crop": CROP, "grid": GRID, "jpeg_quality": QUALITY},
                        train_args=vars(args), data={"images": len(items), "fake": int(y.sum()),
                                                     "sources": sorted({it.source for it in items})},
                        parameters=sum(p.numel() for p in net.parameters()), train_seconds=round(time.time() - t0, 1))
    save_checkpoint(args.out, net, record)
    print(f"wrote {args.out}.safetensors / .json")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
