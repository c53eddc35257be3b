"""Train the wild track's head on cached CLIP features, choose it on validation, calibrate, and ship it.

    python -m train.wild_features          # once: the backbone's features of every image (cached)
    python -m train.train_wild --out checkpoints/wild

Candidates (every one trained on the training sources' ``clean`` and augmented views): a linear probe
on the normalised embedding, the same with class tokens of earlier blocks, and small MLPs on those.
The winner is the one with the best mean validation ROC-AUC over the ``clean`` and format-controlled
views (validation sources are disjoint from training and test sources). Then, on validation only:
temperature (log loss) and the threshold (best balanced accuracy among thresholds that call at least
``--min-real-accuracy`` of real photographs real). The test split is never read here.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import log_loss, roc_auc_score

from detector.checkpoint import read_record, save_checkpoint
from detector.record import Record
from detector.engine import sigmoid
from detector.metrics import compute_metrics
from detector.models import CLIP_MEAN, CLIP_STD, ClipViTB16, WildHead
from train.calibration import choose_threshold_guarded, expected_calibration_error, fit_temperature
from train.wild_data import (
    MANIFEST,
    MAX_FAKE_PER_GROUP,
    MAX_REAL_PER_SOURCE,
    SOURCES,
    WILD_SIZE,
    load_features,
    read_manifest,
    select_training,
)

CANDIDATES = [
    {"kind": "linear", "layers": []},
    {"kind": "linear", "layers": [12]},
    {"kind": "linear", "layers": [6, 9, 12]},
    {"kind": "linear", "layers": [4, 6, 8, 10, 12]},
    {"kind": "mlp", "layers": []},
    {"kind": "mlp", "layers": [6, 9, 12]},
    {"kind": "mlp", "layers": [4, 6, 8, 10, 12]},
]
WEIGHT_DECAYS = [1e-4, 1e-2, 1e-1]
UNCERTAIN_BAND = 0.15  # as the CIFAKE track: P(fake) within this of the threshold is "uncertain"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="checkpoints/wild")
    p.add_argument("--backbone", default="checkpoints/clip_vit_b16")
    p.add_argument("--aug-views", type=int, default=1)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--min-real-accuracy", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    return p


def features(head: WildHead, e: np.ndarray, cls: np.ndarray) -> torch.Tensor:
    """The head's input, computed by the head's own code (the same function the full model runs)."""
    with torch.no_grad():
        return head.features(torch.from_numpy(e), [torch.from_numpy(cls[:, i - 1].astype(np.float32)) for i in head.layers])


def fit_head(cfg: dict, weight_decay: float, e, cls, y, epochs: int, seed: int, weights: np.ndarray | None = None
             ) -> WildHead:
    """Full-batch AdamW, small enough to train in seconds. BCE balanced by class (``pos_weight``), or weighted
    per image by ``weights`` (train.wild_cv: sources balanced within each class)."""
    torch.manual_seed(seed)
    head = WildHead(kind=cfg["kind"], layers=tuple(cfg["layers"]))
    x, t = features(head, e, cls), torch.from_numpy(y).float()
    pos_weight = torch.tensor((t == 0).sum().item() / max((t == 1).sum().item(), 1))
    wt = None if weights is None else torch.from_numpy(np.asarray(weights)).float()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3 if cfg["kind"] == "mlp" else 1e-2, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(t), generator=gen).split(256):
            if wt is None:
                loss = F.binary_cross_entropy_with_logits(head(x[idx]), t[idx], pos_weight=pos_weight)
            else:
                loss = (F.binary_cross_entropy_with_logits(head(x[idx]), t[idx], reduction="none") * wt[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return head.eval()


def logits_of(head: WildHead, e, cls) -> np.ndarray:
    with torch.no_grad():
        return head(features(head, e, cls)).numpy()


def split_features(items, split: str, views: list[str]):
    part = [it for it in items if it.split == split]
    out = {}
    for v in views:
        e, cls, ok = load_features(part, v)
        out[v] = (e[ok], cls[ok], np.array([it.label for it in part])[ok], [it for it, k in zip(part, ok) if k])
    return out


def fingerprint() -> str:
    return hashlib.sha256(Path(MANIFEST).read_bytes() + Path(SOURCES).read_bytes()).hexdigest()[:16]


def main(args: argparse.Namespace) -> dict:
    t0 = time.time()
    items = select_training(read_manifest())  # the same capped training set the feature cache holds
    train_views = ["clean"] + [f"aug{k}" for k in range(args.aug_views)]
    tr = split_features(items, "train", train_views)
    va = split_features(items, "val", ["clean", "fc"])
    e = np.concatenate([tr[v][0] for v in train_views])
    cls = np.concatenate([tr[v][1] for v in train_views])
    y = np.concatenate([tr[v][2] for v in train_views])
    n_images = len({it.sha256 for v in train_views for it in tr[v][3]})
    print(f"train: {len(y)} views of {n_images} images ({int(y.sum())} fake views); "
          f"val: {len(va['clean'][2])} images ({int(va['clean'][2].sum())} fake)")

    results, best = [], None
    for cfg in CANDIDATES:
        for wd in WEIGHT_DECAYS:
            head = fit_head(cfg, wd, e, cls, y, args.epochs, args.seed)
            aucs = {v: roc_auc_score(va[v][2], logits_of(head, va[v][0], va[v][1])) for v in ("clean", "fc")}
            score = float(np.mean(list(aucs.values())))
            results.append({"head": cfg, "weight_decay": wd, "val_auc_clean": round(aucs["clean"], 4),
                            "val_auc_fc": round(aucs["fc"], 4), "val_auc_mean": round(score, 4)})
            print(f"{cfg['kind']:6s} layers={cfg['layers']!s:18s} wd={wd:<6g} val AUC clean {aucs['clean']:.4f} "
                  f"fc {aucs['fc']:.4f}")
            if best is None or score > best[0]:
                best = (score, cfg, wd, head)
    _, cfg, wd, head = best

    # Calibration and threshold on validation (clean view: what users upload).
    vl = logits_of(head, va["clean"][0], va["clean"][1])
    vy = va["clean"][2]
    temperature = fit_temperature(vl, vy)
    vp = sigmoid(vl, temperature)
    threshold = choose_threshold_guarded(vy, vp, args.min_real_accuracy)
    val_metrics = {v: compute_metrics(va[v][2], sigmoid(logits_of(head, va[v][0], va[v][1]), temperature), threshold)
                   for v in ("clean", "fc")}
    val_metrics["clean"].update(ece=expected_calibration_error(vy, vp), log_loss=log_loss(vy, vp, labels=[0, 1]))

    brec = read_record(args.backbone)
    # What the head saw (training images with at least one cached view) and what it is judged on.
    used = {it.sha256: it for v in train_views for it in tr[v][3]}
    used.update({it.sha256: it for it in items if it.split in ("val", "test")})
    counts = {s: {"real": sum(1 for it in used.values() if it.split == s and not it.label),
                  "fake": sum(1 for it in used.values() if it.split == s and it.label),
                  "sources": sorted({it.source for it in used.values() if it.split == s})} for s in ("train", "val", "test")}
    record = Record(
        "wild", {"head": {"kind": cfg["kind"], "layers": cfg["layers"]}}, input_size=WILD_SIZE,
        mean=list(CLIP_MEAN), std=list(CLIP_STD), name=Path(args.out).name, track="wild",
        description="CLIP ViT-B/16 (OpenAI, frozen) + a head trained on real-world photographs and AI images",
        backbone={"name": Path(args.backbone).name, "weights_sha256": brec.weights_sha256},
        threshold=round(threshold, 4), temperature=round(temperature, 4), uncertain_band=UNCERTAIN_BAND,
        threshold_rule=f"best balanced validation accuracy with >= {args.min_real_accuracy:.0%} of real photos called real",
        train_args={**vars(args), "weight_decay": wd, "max_fake_per_group": MAX_FAKE_PER_GROUP,
                    "max_real_per_source": MAX_REAL_PER_SOURCE, "candidates": results},
        data_fingerprint=fingerprint(), data=counts,
        parameters=sum(p.numel() for p in head.parameters()) + sum(p.numel() for p in ClipViTB16().parameters()), train_seconds=round(time.time() - t0, 1),
        metrics={"val": val_metrics},
    )
    state = {f"head.{k}": v.detach().contiguous() for k, v in head.state_dict().items()}
    rec = save_checkpoint(args.out, None, record, state=state, storage="float32 (head only; backbone from its own checkpoint)")
    print(f"chose {cfg} wd={wd}: val AUC {best[0]:.4f}; T={temperature:.3f}, threshold={threshold:.4f}; "
          f"val real acc {val_metrics['clean']['real_accuracy']:.3f}, fake acc {val_metrics['clean']['fake_accuracy']:.3f}")
    print(f"wrote {args.out}.safetensors / .json")
    return rec


if __name__ == "__main__":
    main(get_args_parser().parse_args())
