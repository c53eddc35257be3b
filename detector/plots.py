"""Figures: training curves and evaluation plots (scikit-learn displays), written atomically as PNG."""

from __future__ import annotations

import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay  # noqa: E402

from .checkpoint import atomic_write  # noqa: E402
from .preprocess import CLASSES  # noqa: E402


def save_figure(fig, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def plot_history(history: list[dict], path: str | os.PathLike) -> None:
    """Loss and accuracy per epoch, train against validation."""
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    a.plot(ep, [h["val_loss"] for h in history], "o-", label="validation")
    a.set(xlabel="epoch", ylabel="BCE loss", title="loss")
    b.plot(ep, [h["train_accuracy"] for h in history], "o-", label="train")
    b.plot(ep, [h["val_accuracy"] for h in history], "o-", label="validation")
    b.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def plot_evaluation(y_true, p_fake, threshold: float, out_dir: str | os.PathLike, title: str = "") -> list[str]:
    """Confusion matrix, ROC curve and precision-recall curve as three PNGs in ``out_dir``."""
    y = np.asarray(y_true)
    p = np.asarray(p_fake)
    paths = []
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ConfusionMatrixDisplay.from_predictions(y, (p >= threshold).astype(int), labels=[0, 1],
                                            display_labels=list(CLASSES), ax=ax, colorbar=False,
                                            values_format="d", cmap="Blues")
    ax.set_title(f"{title} confusion matrix".strip())
    paths.append(os.path.join(out_dir, "confusion_matrix.png"))
    save_figure(fig, paths[-1])
    for name, display in (("roc_curve.png", RocCurveDisplay), ("pr_curve.png", PrecisionRecallDisplay)):
        fig, ax = plt.subplots(figsize=(4.2, 3.8))
        display.from_predictions(y, p, pos_label=1, name=title or "model", ax=ax)
        ax.grid(alpha=0.3)
        paths.append(os.path.join(out_dir, name))
        save_figure(fig, paths[-1])
    return paths
