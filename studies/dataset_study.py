"""What separates CIFAKE's real and fake images: t-SNE, pixel and blur histograms, a background-defect measure.

    python -m studies.dataset_study --test cifake_test.zip [--model fakespot] [--n 2000]

- t-SNE (scikit-learn, PCA-initialised, perplexity 30) of a seeded, class-balanced sample of ``--n``
  test images: of their raw pixels (after PCA to 50 dimensions) and of the best model's embeddings
  (the input of its final linear layer; an ensemble's first member). Beside each picture, the share of
  each point's 10 nearest neighbours (in the full space, not the 2-D picture) that share its class.
- Per-channel pixel-intensity histograms and blur (variance of the Laplacian) histograms over the
  whole test split, real against fake.
- Background defect: the RMS of the high-frequency residual (grey image minus its Gaussian blur,
  sigma 1) on the background (outside the GrabCut object mask the app uses) and its ratio to the same
  residual on the object, real against fake, with the ROC-AUC of each as a one-number detector.
About 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from tqdm import tqdm

from detector.data import load_image_set
from detector.explain import object_mask
from detector.models import Ensemble
from detector.predict import CIFAKE_MODEL, load
from detector.preprocess import normalize, to_batch
from detector.stats import laplacian_var
from train.results import FIGURES, save_result
from train.splits import balanced

CLASS_COLOURS = {"real": "tab:blue", "fake": "tab:red"}


def embeddings(pred, images: np.ndarray, batch: int = 500) -> np.ndarray:
    """The input of the model's final linear layer (an ensemble's first member) for each image."""
    model = pred.model.members[0] if isinstance(pred.model, Ensemble) else pred.model
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    feats = []
    hook = last.register_forward_hook(lambda mod, inp, out: feats.append(inp[0].detach().float().cpu()))
    try:
        with torch.no_grad():
            for i in range(0, len(images), batch):
                model(normalize(to_batch(images[i:i + batch]), pred.mean, pred.std).to(pred.device))
    finally:
        hook.remove()
    return torch.cat(feats).numpy()


def neighbour_purity(x: np.ndarray, y: np.ndarray, k: int = 10) -> float:
    """Mean share of each point's k nearest neighbours (Euclidean, itself excluded) with its label."""
    _, nn = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return float((y[nn[:, 1:]] == y[:, None]).mean())


def residual_rms(img: np.ndarray, fg: np.ndarray) -> tuple[float, float]:
    """RMS of the high-frequency residual on the background and on the object."""
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    r = g - cv2.GaussianBlur(g, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT_101)
    bg = float(np.sqrt((r[~fg] ** 2).mean())) if (~fg).any() else float("nan")
    obj = float(np.sqrt((r[fg] ** 2).mean())) if fg.any() else float("nan")
    return bg, obj


def _summary(values: np.ndarray, labels: np.ndarray) -> dict:
    ok = ~np.isnan(values)
    v, y = values[ok], labels[ok]
    auc = float(roc_auc_score(y, v))
    return {"real_median": float(np.median(v[y == 0])), "fake_median": float(np.median(v[y == 1])),
            "real_mean": float(v[y == 0].mean()), "fake_mean": float(v[y == 1].mean()),
            "roc_auc": max(auc, 1 - auc), "higher_means": "fake" if auc >= 0.5 else "real"}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Dataset study: t-SNE, histograms, background defect")
    p.add_argument("--test", nargs="+", required=True)
    p.add_argument("--model", default=CIFAKE_MODEL)
    p.add_argument("--n", type=int, default=2000, help="class-balanced sample for t-SNE and the object masks")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(args: argparse.Namespace) -> dict:
    from detector.plots import plt, save_figure

    t0 = time.perf_counter()
    test = load_image_set(args.test, labelled=True)
    sample = balanced(test, args.n, args.seed)
    images, labels = sample.images, sample.labels
    pred = load(args.model)
    result = {"model": pred.name, "model_sha256": pred.record.weights_sha256, "n": len(sample), "test_n": len(test)}

    pixels = PCA(50, random_state=args.seed).fit_transform(images.reshape(len(images), -1) / 255.0)
    emb = embeddings(pred, images)
    spaces = {"raw pixels (PCA 50)": pixels, f"{pred.name} embeddings ({emb.shape[1]}-d)": emb}
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    result["tsne"] = {}
    for ax, (name, x) in zip(axes, tqdm(spaces.items(), desc="t-SNE")):
        z = TSNE(2, perplexity=30, init="pca", random_state=args.seed).fit_transform(x)
        purity = neighbour_purity(x, labels)
        result["tsne"][name] = {"neighbour_purity_10": purity}
        for c, cls in enumerate(CLASS_COLOURS):
            ax.scatter(*z[labels == c].T, s=3, alpha=0.5, c=CLASS_COLOURS[cls], label=cls)
        ax.set(title=f"t-SNE of {name}\n10-NN class agreement {purity:.1%}", xticks=[], yticks=[])
        ax.legend(markerscale=4)
    fig.tight_layout()
    save_figure(fig, FIGURES / "dataset_tsne.png")

    # Histograms over the whole test split.
    fig, axes = plt.subplots(1, 5, figsize=(20, 3.6))
    result["channels"] = {}
    for ch, (ax, name) in enumerate(zip(axes[:3], ("red", "green", "blue"))):
        result["channels"][name] = {}
        for c, cls in enumerate(CLASS_COLOURS):
            v = test.images[test.labels == c][..., ch].ravel()
            ax.hist(v, bins=64, range=(0, 256), density=True, histtype="step", color=CLASS_COLOURS[cls], label=cls)
            result["channels"][name][cls] = {"mean": float(v.mean()), "std": float(v.std()),
                                             "share_0_or_255": float(((v == 0) | (v == 255)).mean())}
        ax.set(title=f"{name} channel intensity", xlabel="0-255")
        ax.legend()
    lap = np.array([laplacian_var(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float64))
                    for im in tqdm(test.images, desc="blur")])
    result["blur_laplacian_var"] = _summary(lap, test.labels)
    for c, cls in enumerate(CLASS_COLOURS):
        axes[3].hist(np.log10(lap[test.labels == c] + 1), bins=60, density=True, histtype="step",
                     color=CLASS_COLOURS[cls], label=cls)
    axes[3].set(title="blur: variance of the Laplacian", xlabel="log10(1 + value); lower = blurrier")
    axes[3].legend()

    # Background defect on the sample, with the app's object masks.
    fg = np.stack([object_mask(im) for im in tqdm(images, desc="object masks")])
    res = np.array([residual_rms(im, f) for im, f in zip(images, fg)])
    bg_rms, ratio = res[:, 0], res[:, 0] / np.maximum(res[:, 1], 1e-6)
    result["background_defect"] = {"background_residual_rms": _summary(bg_rms, labels),
                                   "background_to_object_ratio": _summary(ratio, labels),
                                   "object_residual_rms": _summary(res[:, 1], labels)}
    for c, cls in enumerate(CLASS_COLOURS):
        axes[4].hist(bg_rms[labels == c], bins=50, density=True, histtype="step", color=CLASS_COLOURS[cls], label=cls)
    axes[4].set(title="background defect: residual RMS off the object", xlabel="grey levels")
    axes[4].legend()
    fig.tight_layout()
    save_figure(fig, FIGURES / "dataset_histograms.png")

    path = save_result("dataset", result, t0)
    print(json.dumps({k: result[k] for k in ("tsne", "blur_laplacian_var", "background_defect")}, indent=1))
    print(json.dumps({"result": str(path)}))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
