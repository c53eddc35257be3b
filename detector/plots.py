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


def stat_histograms(reference, names: list[str] | None = None):
    """One small panel per statistic: the real and fake training distributions (normalised histograms).

    ``reference`` is a ``detector.stats.Reference``; returns a matplotlib Figure (the caller closes it).
    """
    from .stats import STATS

    names = names or list(STATS)
    fig, axes = plt.subplots(1, len(names), figsize=(3.1 * len(names), 2.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        s = reference.stats[name]
        edges = np.asarray(s["edges"])
        for cls, colour in (("real", "tab:blue"), ("fake", "tab:red")):
            counts = np.asarray(s[cls]["counts"], dtype=float)
            ax.stairs(counts / counts.sum(), edges, fill=True, alpha=0.35, color=colour, label=cls)
        if s.get("log_x"):
            ax.set_xscale("log")
        ax.set_title(STATS[name][0], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def model_report(metrics: dict, title: str = ""):
    """Confusion matrix, ROC and PR curves from a record's stored metrics (``compact_curves`` form)."""
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(11, 3.4))
    ConfusionMatrixDisplay(np.asarray(metrics["confusion_matrix"]), display_labels=list(CLASSES)).plot(
        ax=a, colorbar=False, values_format="d", cmap="Blues")
    a.set_title("confusion matrix", fontsize=10)
    curves = metrics.get("curves") or {}
    if curves:
        b.plot(curves["fpr"], curves["tpr"], lw=2)
        b.plot([0, 1], [0, 1], "k:", lw=1)
        b.set(xlabel="false-positive rate", ylabel="true-positive rate",
              title=f"ROC (AUC {metrics['roc_auc']:.4f})")
        c.plot(curves["recall"], curves["precision"], lw=2)
        c.set(xlabel="recall", ylabel="precision", title=f"precision-recall (AP {metrics['average_precision']:.4f})")
        for ax in (b, c):
            ax.grid(alpha=0.3)
            ax.title.set_fontsize(10)
    else:
        for ax in (b, c):
            ax.text(0.5, 0.5, "no curves in this record\n(re-run train.evaluate --write-record)", ha="center",
                    va="center", fontsize=9)
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def figure_to_array(fig) -> np.ndarray:
    """Render a figure to an RGB array and close it (an image output is cheaper than a plot output)."""
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


class StatHistogramPainter:
    """``stat_histograms`` drawn once; each image only adds its value markers (matplotlib blitting, a few ms).

    Thread-safe: one lock around the shared canvas.
    """

    def __init__(self, reference, names: list[str] | None = None) -> None:
        import threading

        from matplotlib.lines import Line2D

        from .stats import STATS

        self.names = names or list(STATS)
        self.fig = stat_histograms(reference, self.names)
        axes = self.fig.axes
        handles, labels = axes[0].get_legend_handles_labels()
        axes[0].legend(handles + [Line2D([], [], color="black", lw=2)], labels + ["this image"], fontsize=7,
                       frameon=False)
        self.fig.canvas.draw()
        self.background = self.fig.canvas.copy_from_bbox(self.fig.bbox)
        self.ranges = {n: (reference.stats[n]["edges"][0], reference.stats[n]["edges"][-1]) for n in self.names}
        self.lines = {n: ax.axvline(self.ranges[n][0], color="black", lw=2, animated=True)
                      for n, ax in zip(self.names, axes)}
        self._lock = threading.Lock()

    def render(self, values: dict[str, float]) -> np.ndarray:
        with self._lock:
            canvas = self.fig.canvas
            canvas.restore_region(self.background)
            for name, line in self.lines.items():
                lo, hi = self.ranges[name]
                v = float(np.clip(values[name], lo, hi))
                line.set_xdata([v, v])
                line.axes.draw_artist(line)
            return np.asarray(canvas.buffer_rgba())[..., :3].copy()
