import math

import numpy as np
import pytest

from detector.metrics import compute_metrics


def test_metrics_match_a_hand_computed_confusion_matrix():
    # 4 real, 6 fake. Predictions at 0.5: real -> [0, 0, 1, 0]; fake -> [1, 1, 1, 0, 0, 1]
    y = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    p = [0.1, 0.2, 0.7, 0.4, 0.9, 0.8, 0.6, 0.3, 0.45, 0.95]
    m = compute_metrics(y, p)
    tn, fp, fn, tp = 3, 1, 2, 4
    assert m["confusion_matrix"] == [[tn, fp], [fn, tp]]
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["recall"] == pytest.approx(4 / 6) == pytest.approx(m["fake_accuracy"])
    assert m["specificity"] == pytest.approx(3 / 4) == pytest.approx(m["real_accuracy"])
    assert m["fpr"] == pytest.approx(1 / 4)
    assert m["f1"] == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))
    # ROC-AUC by counting ordered (fake, real) pairs: fake scores above real scores.
    pairs = [(pf > pr) + 0.5 * (pf == pr) for pf in p[4:] for pr in p[:4]]
    assert m["roc_auc"] == pytest.approx(sum(pairs) / len(pairs))
    assert m["n"] == 10 and m["n_real"] == 4 and m["n_fake"] == 6


def test_threshold_moves_the_decision():
    m = compute_metrics([0, 1], [0.3, 0.6], threshold=0.7)
    assert m["confusion_matrix"] == [[1, 0], [1, 0]]


def test_single_class_gives_nan_auc_not_an_error():
    m = compute_metrics([1, 1], [0.8, 0.2])
    assert math.isnan(m["roc_auc"]) and m["accuracy"] == 0.5


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same length"):
        compute_metrics([0, 1, 1], np.zeros(2))
