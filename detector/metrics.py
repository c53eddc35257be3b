"""Binary detection metrics from scikit-learn; fake (label 1) is the positive class."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (accuracy_score, average_precision_score, brier_score_loss, confusion_matrix,
                             f1_score, log_loss, precision_recall_curve, precision_score, recall_score,
                             roc_auc_score, roc_curve)


def compute_metrics(y_true, p_fake, threshold: float = 0.5) -> dict:
    """Accuracy, precision, recall, F1, specificity, FPR, ROC-AUC, AP, per-class accuracy, confusion matrix.

    The confusion matrix is ``[[TN, FP], [FN, TP]]`` (rows = true real/fake, columns = predicted).
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(p_fake, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y_true {y.shape} and p_fake {p.shape} must be 1-D and of the same length")
    pred = (p >= threshold).astype(np.int64)
    cm = confusion_matrix(y, pred, labels=[0, 1])
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    both = len(np.unique(y)) == 2
    out = {
        "n": int(len(y)),
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"),
        "fpr": fp / (tn + fp) if tn + fp else float("nan"),
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "average_precision": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)) if both else float("nan"),
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }
    out["real_accuracy"] = out["specificity"]  # share of real images called real
    out["fake_accuracy"] = tp / (tp + fn) if tp + fn else float("nan")  # share of fakes caught (= recall)
    return out


def compact_curves(y_true, p_fake, points: int = 101) -> dict:
    """ROC and precision-recall curves resampled to ``points`` values, small enough for a record.

    ROC: TPR at evenly spaced FPR; PR: precision at evenly spaced recall (the best precision reachable
    at that recall or more, as ``average_precision`` assumes). Both from scikit-learn's exact curves.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(p_fake, dtype=np.float64)
    if len(np.unique(y)) != 2:
        return {}
    grid = np.linspace(0, 1, points)
    fpr, tpr, _ = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    order = np.argsort(recall)
    best = np.maximum.accumulate(precision[order][::-1])[::-1]  # best precision at recall >= r
    pr = np.interp(grid, recall[order], best)
    r4 = lambda a: [round(float(v), 5) for v in a]  # noqa: E731
    return {"fpr": r4(grid), "tpr": r4(np.interp(grid, fpr, tpr)), "recall": r4(grid), "precision": r4(pr)}
