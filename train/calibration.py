"""Calibration: temperature scaling fitted on validation, calibration error, and a validation-chosen threshold.

P(fake) = sigmoid(logit / T). T > 1 softens over-confident models; it never changes the ranking, so
ROC-AUC is untouched, while the log loss and the calibration error usually improve.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss

from detector.engine import sigmoid


def fit_temperature(logits, labels, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T minimising the validation log loss of sigmoid(logit / T) (a bounded 1-D search over log T)."""
    y = np.asarray(labels)
    res = minimize_scalar(lambda lt: log_loss(y, np.clip(sigmoid(logits, np.exp(lt)), 1e-12, 1 - 1e-12), labels=[0, 1]),
                          bounds=np.log(bounds), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(res.x))


def expected_calibration_error(labels, p_fake, bins: int = 15) -> float:
    """ECE over equal-width bins of P(fake): the bin-weighted gap between mean P(fake) and the share of fakes."""
    y, p = np.asarray(labels), np.asarray(p_fake, np.float64)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(ece)


def reliability(labels, p_fake, bins: int = 15) -> dict:
    """Reliability-diagram points from scikit-learn: mean P(fake) and share of fakes per non-empty bin."""
    frac, mean = calibration_curve(np.asarray(labels), np.asarray(p_fake), n_bins=bins, strategy="uniform")
    return {"mean_p_fake": mean.tolist(), "fraction_fake": frac.tolist()}


def choose_threshold(labels, p_fake) -> float:
    """The P(fake) threshold with the best validation accuracy; among ties, the one nearest 0.5.

    Candidates are midpoints between consecutive distinct scores, so the choice never sits on a sample.
    """
    y, p = np.asarray(labels), np.asarray(p_fake, np.float64)
    s = np.unique(p)
    cands = np.concatenate([[0.5], (s[:-1] + s[1:]) / 2]) if len(s) > 1 else np.array([0.5])
    order = np.argsort(p)
    ps, ys = p[order], y[order]
    # accuracy at threshold t = (#real with p < t + #fake with p >= t) / n, via cumulative counts
    below = np.searchsorted(ps, cands, side="left")
    real_below = np.concatenate([[0], np.cumsum(ys == 0)])[below]
    fake_above = (ys == 1).sum() - np.concatenate([[0], np.cumsum(ys == 1)])[below]
    acc = (real_below + fake_above) / len(y)
    best = np.flatnonzero(acc >= acc.max() - 1e-12)
    return float(cands[best[np.argmin(np.abs(cands[best] - 0.5))]])


def choose_threshold_guarded(labels, p_fake, min_real_accuracy: float = 0.95) -> float:
    """The threshold with the best balanced accuracy among those that keep real-class accuracy (reals
    called real) at or above ``min_real_accuracy`` on validation; plain best balanced accuracy if none do.

    For a tool that may be used to accuse a photographer, calling a real photo fake is the costlier
    error, so the guard comes first and accuracy second.
    """
    y, p = np.asarray(labels), np.asarray(p_fake, np.float64)
    s = np.unique(p)
    cands = np.concatenate([[0.5], (s[:-1] + s[1:]) / 2]) if len(s) > 1 else np.array([0.5])
    real_acc = np.array([(p[y == 0] < t).mean() for t in cands])
    fake_acc = np.array([(p[y == 1] >= t).mean() for t in cands])
    bal = (real_acc + fake_acc) / 2
    ok = real_acc >= min_real_accuracy
    score = np.where(ok, bal, -1.0) if ok.any() else bal
    best = np.flatnonzero(score >= score.max() - 1e-12)
    return float(cands[best[np.argmin(np.abs(cands[best] - 0.5))]])
