"""Robustness of the shipped models: common corruptions and adversarial attacks on the test split.

    python -m studies.robustness --test ../shared/data/cifake_test.zip [--n 2000] [--adv-n 200] [--models ...]

Corruptions, applied to test images of both classes at their 32x32 size: JPEG re-encoding at quality
90/75/50/30 (Pillow), Gaussian blur sigma 0.5/1/2 (OpenCV), down- and up-scaling by 0.5 (bicubic), Gaussian
noise sigma 2/5/10 on 0-255. Accuracy (at each model's threshold) and ROC-AUC per corruption.
Adversarial: FGSM and PGD (L-infinity, 10 steps of eps/4, random start) at eps 1, 2, 4, 8 over 255,
in pixel space, each image pushed away from its true label; accuracy under attack.

On 2 cores the full test split is too slow for ResNet50 (about 15 ms per image per corruption), so every
model is measured on the same seeded, class-balanced subsample: ``--n`` images for corruptions and the
first ``--adv-n`` of them for attacks (``--n 0`` uses the whole split). About 12 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import io
import json
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from detector.data import load_image_set
from detector.metrics import compute_metrics
from detector.predict import load, shipped_models
from detector.preprocess import to_batch
from train.results import FIGURES, save_result
from train.splits import balanced

CORRUPTIONS = ["clean", "jpeg90", "jpeg75", "jpeg50", "jpeg30", "blur0.5", "blur1", "blur2", "resize0.5",
               "noise2", "noise5", "noise10"]
EPSILONS = [1, 2, 4, 8]


def corrupt(images: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """Apply one named corruption to (N, H, W, 3) uint8 images."""
    if kind == "clean":
        return images
    out = np.empty_like(images)
    if kind.startswith("jpeg"):
        q = int(kind[4:])
        for i, im in enumerate(images):
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, "JPEG", quality=q)
            out[i] = np.asarray(Image.open(buf).convert("RGB"))
    elif kind.startswith("blur"):
        s = float(kind[4:])
        for i, im in enumerate(images):
            out[i] = cv2.GaussianBlur(im, (0, 0), s, borderType=cv2.BORDER_REFLECT_101)
    elif kind.startswith("resize"):
        f = float(kind[6:])
        h, w = images.shape[1:3]
        for i, im in enumerate(images):
            small = cv2.resize(im, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
            out[i] = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind.startswith("noise"):
        s = float(kind[5:])
        rng = np.random.default_rng(seed)
        out = np.clip(images + rng.normal(0, s, images.shape), 0, 255).round().astype(np.uint8)
    else:
        raise ValueError(f"unknown corruption {kind!r}; choose from {CORRUPTIONS}")
    return out


def attack(pred, images: np.ndarray, labels: np.ndarray, eps: float, steps: int, batch: int = 100,
           seed: int = 0) -> np.ndarray:
    """Adversarial P(fake): FGSM when steps == 1 (no random start), else PGD. ``eps`` on the 0-255 scale."""
    model, dev = pred.model, pred.device
    mean = torch.tensor(pred.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(pred.std, device=dev).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    e = eps / 255.0
    alpha = e if steps == 1 else e / 4
    out = []
    for i in range(0, len(images), batch):
        x0 = to_batch(images[i:i + batch]).float().div(255).to(dev)
        y = torch.as_tensor(labels[i:i + batch], dtype=torch.float32, device=dev)
        x = x0.clone()
        if steps > 1:
            x = (x + (torch.rand(x.shape, generator=gen) * 2 - 1).to(dev) * e).clamp(0, 1)
        for _ in range(steps):
            x.requires_grad_(True)
            loss = F.binary_cross_entropy_with_logits(model((x - mean) / std) / pred.temperature, y)
            (g,) = torch.autograd.grad(loss, x)
            x = torch.min(torch.max(x.detach() + alpha * g.sign(), x0 - e), x0 + e).clamp(0, 1)
        with torch.no_grad():
            out.append(torch.sigmoid(model((x - mean) / std) / pred.temperature).cpu().numpy())
    return np.concatenate(out)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Corruption and adversarial robustness of the shipped models")
    p.add_argument("--test", nargs="+", required=True)
    p.add_argument("--models", nargs="*", default=None)
    p.add_argument("--n", type=int, default=2000, help="class-balanced test subsample (0 = all)")
    p.add_argument("--adv-n", type=int, default=200, help="images attacked (the first of the subsample)")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    return p


def plot(result: dict, path) -> None:
    from detector.plots import plt, save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [2.2, 1]})
    names = list(result["models"])
    x = np.arange(len(CORRUPTIONS))
    for k, name in enumerate(names):
        acc = [result["models"][name]["corruptions"][c]["accuracy"] for c in CORRUPTIONS]
        a.bar(x + (k - (len(names) - 1) / 2) * 0.8 / len(names), acc, 0.8 / len(names), label=name)
        adv = result["models"][name]["adversarial"]
        for attack_name, style in (("fgsm", "o--"), ("pgd", "o-")):
            b.plot([0] + EPSILONS, [adv["clean_accuracy"]] + [adv[attack_name][str(e)] for e in EPSILONS], style,
                   label=f"{name} {attack_name.upper()}")
    a.set_xticks(x, CORRUPTIONS, rotation=35, fontsize=8)
    a.set(ylabel="accuracy", ylim=(0.4, 1.0), title="corruptions (test subsample)")
    a.axhline(0.5, color="k", lw=0.8, ls=":")
    a.legend(fontsize=8)
    b.set(xlabel="epsilon (/255, L-inf)", ylabel="accuracy", title="adversarial", ylim=(0, 1))
    b.legend(fontsize=6)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    sample = balanced(load_image_set(args.test, labelled=True), args.n, args.seed)
    images, labels = sample.images, sample.labels
    corrupted = {c: corrupt(images, c, args.seed) for c in tqdm(CORRUPTIONS, desc="corrupting")}
    result = {"n": len(sample), "adv_n": min(args.adv_n, len(sample)), "pgd_steps": args.pgd_steps,
              "epsilons_over_255": EPSILONS, "corruption_list": CORRUPTIONS, "models": {}}
    for name in args.models or shipped_models():
        pred = load(name)
        r = {"threshold": pred.threshold, "corruptions": {}}
        for c in tqdm(CORRUPTIONS, desc=f"{name} corruptions"):
            m = compute_metrics(labels, pred.predict_arrays(corrupted[c]), pred.threshold)
            r["corruptions"][c] = {"accuracy": m["accuracy"], "roc_auc": m["roc_auc"],
                                   "real_accuracy": m["real_accuracy"], "fake_accuracy": m["fake_accuracy"]}
        na = result["adv_n"]
        xa, ya = images[:na], labels[:na]
        adv = {"clean_accuracy": float(((pred.predict_arrays(xa) >= pred.threshold) == ya).mean()), "fgsm": {}, "pgd": {}}
        for e in tqdm(EPSILONS, desc=f"{name} attacks"):
            adv["fgsm"][str(e)] = float(((attack(pred, xa, ya, e, 1, seed=args.seed) >= pred.threshold) == ya).mean())
            adv["pgd"][str(e)] = float(((attack(pred, xa, ya, e, args.pgd_steps, seed=args.seed) >= pred.threshold)
                                        == ya).mean())
        r["adversarial"] = adv
        result["models"][name] = r
        print(name, json.dumps({c: round(v["accuracy"], 4) for c, v in r["corruptions"].items()}),
              "FGSM", adv["fgsm"], "PGD", adv["pgd"], flush=True)
    plot(result, FIGURES / "robustness.png")
    path = save_result("robustness", result, t0)
    print(json.dumps({"result": str(path), "figure": str(FIGURES / "robustness.png")}))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
