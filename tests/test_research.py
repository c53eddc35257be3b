"""Calibration and robustness helpers of the research suite, on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.models import create_model
from detector.predict import Predictor
from detector.preprocess import MEAN, STD
from detector.record import Record
from studies.robustness import CORRUPTIONS, attack, corrupt
from train.calibration import choose_threshold, expected_calibration_error, fit_temperature, reliability

from .conftest import synthetic_image


def test_temperature_is_recovered():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, 20000)  # true logits
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)
    assert fit_temperature(z * 2.5, y) == pytest.approx(2.5, rel=0.05)  # over-confident by 2.5x
    assert fit_temperature(z, y) == pytest.approx(1.0, rel=0.05)


def test_ece_of_calibrated_and_miscalibrated_scores():
    rng = np.random.default_rng(1)
    p = rng.random(50000)
    y = (rng.random(p.shape) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.01
    assert expected_calibration_error(y, np.clip(p * 0.5, 0, 1)) > 0.2
    rel = reliability(y, p, bins=10)
    assert len(rel["mean_p_fake"]) == 10 and np.allclose(rel["mean_p_fake"], rel["fraction_fake"], atol=0.03)


def test_threshold_separates_shifted_scores():
    y = np.array([0] * 5 + [1] * 5)
    p = np.array([0.1, 0.2, 0.3, 0.55, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95])
    t = choose_threshold(y, p)
    assert 0.6 < t <= 0.7 and ((p >= t) == y).all()
    assert choose_threshold(np.array([0, 1]), np.array([0.2, 0.8])) == 0.5  # ties: the nearest to 0.5


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruptions_keep_shape_and_change_pixels(kind):
    imgs = np.stack([synthetic_image(i % 2, np.random.default_rng(i)) for i in range(4)])
    out = corrupt(imgs, kind)
    assert out.shape == imgs.shape and out.dtype == np.uint8
    assert np.array_equal(out, imgs) == (kind == "clean")


def test_pgd_is_at_least_as_strong_as_fgsm_and_stays_in_the_ball():
    torch.manual_seed(0)
    model = create_model("cnn")
    pred = Predictor(model, Record("cnn", input_size=32, mean=list(MEAN), std=list(STD)))
    imgs = np.stack([synthetic_image(i % 2, np.random.default_rng(i)) for i in range(8)])
    y = np.arange(8) % 2
    clean = pred.predict_arrays(imgs)
    loss = lambda p: -np.mean(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9))  # noqa: E731
    fgsm, pgd = attack(pred, imgs, y, 8, 1), attack(pred, imgs, y, 8, 10)
    assert loss(fgsm) > loss(clean) and loss(pgd) >= loss(fgsm) - 1e-3
    assert np.allclose(attack(pred, imgs, y, 0, 1), clean, atol=1e-5)  # eps 0 changes nothing


def test_report_rebuilds_results_md_from_saved_results(tmp_path):
    import argparse

    from studies import report

    text = report.main(argparse.Namespace(out=str(tmp_path / "RESULTS.md")))
    assert (tmp_path / "RESULTS.md").read_text() == text
    assert "## Shipped CIFAKE models on the CIFAKE test split" in text and "`fakespot`" in text
    for name in report.STUDIES:
        assert f"\n## {report.TITLES[name]}\n" in text or f"- {name}: not yet run" in text


def test_calibration_prose_is_written_from_the_figures():
    from studies.report import _calibration_summary

    def row(t, thr, ece_b, ece_a, acc_b, acc_a):
        return {"temperature": t, "threshold": thr, "test": {"before": {"ece": ece_b, "accuracy": acc_b},
                                                             "after": {"ece": ece_a, "accuracy": acc_a}}}

    text = _calibration_summary({"a": row(1.4, 0.6, 0.010, 0.012, 0.95, 0.96),
                                 "b": row(0.9, 0.4, 0.030, 0.020, 0.90, 0.90)})
    assert "at most 0.0300" in text and "T between 0.90 and 1.40" in text
    assert "did not lower the test ECE of `a`." in text
    assert "+1.00 points (`a`), +0.00 points (`b`)" in text and "too many images fake at 0.5 (`a`)" in text
