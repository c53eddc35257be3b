"""Explanations (Grad-CAM, object mask, background share) and image statistics, on synthetic inputs."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import detector
from detector.analysis import analyse, batch_rows
from detector.explain import CAM_METHODS, Explainer, background_share, object_mask, overlay
from detector.models import create_model
from detector.plots import StatHistogramPainter
from detector.predict import Predictor
from detector.preprocess import MEAN, STD
from detector.record import Record
from detector.stats import Reference, hf_energy, image_stats, jpeg_quality, log_spectrum, noise_sigma, summarise

from .conftest import synthetic_image


def _predictor(arch: str, **kwargs) -> Predictor:
    import torch

    torch.manual_seed(0)
    model = create_model(arch, **kwargs)
    return Predictor(model, Record(arch, input_size=32, mean=list(MEAN), std=list(STD)), name=arch)


def _image(seed: int = 0, label: int = 1) -> np.ndarray:
    return synthetic_image(label, np.random.default_rng(seed))


@pytest.mark.parametrize("arch,kwargs", [("cnn", {}), ("fakespot", {}), ("resnet50", {}),
                                         ("ensemble", {"members": [{"arch": "cnn"}, {"arch": "fakespot"}]})])
def test_every_method_gives_spatial_maps_for_every_model(arch, kwargs):
    pred = _predictor(arch, **kwargs)
    ex = Explainer(pred)
    img = _image()
    for method in CAM_METHODS:
        if method == "ScoreCAM" and arch == "resnet50":
            with pytest.raises(ValueError, match="4,096 forward passes"):  # 2,048 channels x 2 maps: refused
                ex.heatmaps(img, method)
            continue
        maps = ex.heatmaps(img, method)
        assert set(maps) == {"fake", "real"}
        for m in maps.values():
            assert m.shape == (32, 32) and np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1 + 1e-6
        # at least one class gets a map that varies over the image: not blank, not a constant 1x1 upsample
        assert max(float(m.std()) for m in maps.values()) > 0.01, (arch, method)


def test_explainer_leaves_the_predictor_model_untouched():
    pred = _predictor("cnn")
    img = _image()
    before = pred.predict(img)
    Explainer(pred).heatmaps(img, "GradCAM")
    assert pred.predict(img) == before
    assert not pred.model._forward_hooks and all(not m._forward_hooks for m in pred.model.modules())


def test_unknown_method_and_class_are_clear_errors():
    ex = Explainer(_predictor("cnn"))
    with pytest.raises(ValueError, match="GradCAM"):
        ex.heatmaps(_image(), "NoSuchCAM")
    with pytest.raises(ValueError, match="real"):
        ex.heatmaps(_image(), "GradCAM", classes=("dog",))


def _square_on_background() -> tuple[np.ndarray, np.ndarray]:
    img = np.zeros((32, 32, 3), np.uint8)
    img[:] = (40, 120, 40)
    img[10:22, 10:22] = (220, 60, 30)
    img = np.clip(img + np.random.default_rng(0).normal(0, 6, img.shape), 0, 255).astype(np.uint8)  # sensor noise
    truth = np.zeros((32, 32), bool)
    truth[10:22, 10:22] = True
    return img, truth


def test_object_mask_finds_a_centred_object():
    img, truth = _square_on_background()
    fg = object_mask(img)
    iou = (fg & truth).sum() / (fg | truth).sum()
    assert iou > 0.8
    assert np.array_equal(object_mask(img), fg)  # seeded: the same image, the same mask


def test_object_mask_falls_back_to_the_centre_on_a_flat_image():
    fg = object_mask(np.full((32, 32, 3), 128, np.uint8))
    assert 0.3 < fg.mean() < 0.8 and fg[16, 16] and not fg[0, 0]


def test_background_share():
    _, truth = _square_on_background()
    on_bg = (~truth).astype(np.float32)
    assert background_share(on_bg, truth) == pytest.approx(1.0)
    assert background_share(truth.astype(np.float32), truth) == pytest.approx(0.0)
    assert background_share(np.ones((32, 32), np.float32), truth) == pytest.approx((~truth).mean())
    assert np.isnan(background_share(np.zeros((32, 32), np.float32), truth))


def test_overlay_is_an_enlarged_rgb_image():
    out = overlay(_image(), np.random.default_rng(0).random((32, 32)).astype(np.float32), size=128)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8


def test_sharpness_statistics_fall_when_the_image_is_blurred():
    img = _image(label=1)
    blurred = cv2.GaussianBlur(img, (5, 5), 1.5)
    a, b = image_stats(img), image_stats(blurred)
    for name in ("laplacian_var", "tenengrad", "hf_energy", "noise_sigma"):
        assert b[name] < a[name], name


def test_noise_estimate_recovers_a_known_sigma():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256]
    smooth = 60 + 0.3 * xx + 0.2 * yy  # a ramp: the Immerkaer mask cancels it exactly
    for sigma in (2.0, 5.0, 10.0):
        grey = smooth + rng.normal(0, sigma, smooth.shape)
        assert noise_sigma(grey) == pytest.approx(sigma, rel=0.05)


def test_high_frequency_share_of_extremes():
    checker = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.float64)
    assert hf_energy(checker) > 0.99
    yy = np.mgrid[0:32, 0:32][0].astype(np.float64)
    assert hf_energy(np.sin(2 * np.pi * yy / 32) * 100) < 0.01
    assert hf_energy(np.full((32, 32), 7.0)) == 0.0


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_jpeg_quality_is_read_back(quality):
    buf = io.BytesIO()
    Image.fromarray(_image()).save(buf, "JPEG", quality=quality)
    assert jpeg_quality(Image.open(io.BytesIO(buf.getvalue()))) == quality


def test_jpeg_quality_is_none_for_png():
    buf = io.BytesIO()
    Image.fromarray(_image()).save(buf, "PNG")
    assert jpeg_quality(Image.open(io.BytesIO(buf.getvalue()))) is None


def test_log_spectrum_is_an_image():
    s = log_spectrum(_image(), size=64)
    assert s.shape == (64, 64) and s.dtype == np.uint8 and s.max() == 255


def test_reference_summary_places_values():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 500)
    values = {"laplacian_var": np.concatenate([rng.normal(100, 10, 500), rng.normal(200, 10, 500)]).clip(1),
              "hf_energy": np.concatenate([rng.normal(0.1, 0.01, 500), rng.normal(0.2, 0.01, 500)])}
    ref = Reference({"stats": summarise(values, labels, bins=20)})
    assert ref.percentile("laplacian_var", "real", 100) == pytest.approx(50, abs=6)
    assert ref.percentile("laplacian_var", "fake", 100) == 0
    assert ref.leaning("hf_energy", 0.2) == "more typical of fake"
    assert ref.leaning("hf_energy", 0.1) == "more typical of real"
    painter = StatHistogramPainter(ref, names=list(values))
    a, b = painter.render({"laplacian_var": 100, "hf_energy": 0.1}), painter.render({"laplacian_var": 200, "hf_energy": 0.2})
    assert a.shape == b.shape and a.ndim == 3 and not np.array_equal(a, b)  # the marker moved


def test_shipped_reference_covers_every_statistic():
    ref = Reference.load()
    assert set(ref.stats) == {"laplacian_var", "tenengrad", "hf_energy", "noise_sigma"}
    for s in ref.stats.values():
        assert s["real"]["n"] == s["fake"]["n"] == 50000


def _scored(threshold=0.5, **record):
    from detector.predict import Predictor

    return Predictor(torch.nn.Identity(), Record("x", input_size=32, mean=[0.5] * 3, std=[0.5] * 3, threshold=threshold,
                                                 **record))


def test_verdict_and_band():
    p = _scored()
    assert p.verdict(0.9).key == "fake" and p.verdict(0.1).key == "real" and p.verdict(0.55).key == "uncertain"
    assert p.verdict(0.55).label == "fake"  # uncertain, leaning fake
    assert p.band == (0.35, 0.65) and _scored(0.9).band[1] == 1.0
    assert _scored(0.5, uncertain_band=0.05).verdict(0.56).key == "fake"  # the record's own band is read


def test_verdict_words_follow_the_models_measured_figures():
    strong = _scored(metrics={"test": {"fake_accuracy": 0.98, "real_accuracy": 0.97}})
    weak = _scored(metrics={"test": {"fake_accuracy": 0.16, "real_accuracy": 0.96}})
    assert strong.verdict(0.1).headline == "Likely a real photograph" and strong.verdict(0.1).caveat == ""
    assert weak.verdict(0.1).headline == "No sign of AI generation found" and "16%" in weak.verdict(0.1).caveat
    assert weak.verdict(0.9).headline == "Likely AI-generated"
    assert "coin toss" in weak.verdict(0.5).caveat


def test_analyse_a_large_rgba_photo(tmp_path):
    big = np.zeros((900, 1200, 4), np.uint8)
    big[..., :3] = cv2.resize(_image(), (1200, 900))
    big[..., 3] = 255
    path = tmp_path / "big.png"
    Image.fromarray(big, "RGBA").save(path)
    pred = _predictor("cnn")
    a = analyse(pred, str(path), Explainer(pred), "GradCAM")
    assert a.size == (1200, 900) and a.large and "far larger" in a.size_note()
    assert a.model_input.shape == (32, 32, 3) and max(a.display.shape[:2]) <= 512
    s = a.summary()
    assert 0 <= s["p_fake"] <= 1 and s["label"] in ("real", "fake") and s["format"] == "PNG"
    assert s["p_fake"] == pytest.approx(float(pred.predict(str(path))), abs=1e-6)  # same policy as the CLI
    assert set(s["background_share"]) == {"real", "fake"} and set(s["stats"]) >= {"noise_sigma"}


def test_analyse_reports_exif_rotated_size(tmp_path):
    img = Image.fromarray(cv2.resize(_image(), (80, 40)))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = tmp_path / "rot.jpg"
    img.save(path, "JPEG", exif=exif, quality=90)
    a = analyse(_predictor("cnn"), str(path))
    assert a.size == (40, 80) and a.jpeg_quality == 90


def test_batch_rows_go_on_past_bad_files(tmp_path):
    import zipfile

    good = tmp_path / "a.png"
    Image.fromarray(_image()).save(good)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    zpath = tmp_path / "set.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for i in range(3):
            buf = io.BytesIO()
            Image.fromarray(_image(i)).save(buf, "JPEG", quality=80)
            z.writestr(f"FAKE/{i}.jpg", buf.getvalue())
        z.writestr("FAKE/broken.jpg", b"\xff\xd8\xff")
    pred = _predictor("cnn")
    rows, errors = [], []
    for r, e, _ in batch_rows(pred, [good, tmp_path / "bad.jpg", zpath], {str(zpath): "set.zip"}, chunk=2):
        rows += r
        errors += e
    assert len(rows) == 4 and len(errors) == 2
    assert {r["file"] for r in rows} >= {"set.zip:FAKE/0.jpg", str(good)}
    assert all(0 <= r["p_fake"] <= 1 and r["label"] in ("real", "fake") for r in rows)
    assert [r["jpeg_quality"] for r in rows if r["file"].startswith("set.zip")] == [80, 80, 80]
    assert {e["file"] for e in errors} == {str(tmp_path / "bad.jpg"), "set.zip:FAKE/broken.jpg"}
    assert all(e["reason"] for e in errors)


def test_shipped_default_model_explains_each_example():
    from pathlib import Path

    from detector.predict import choose_track, image_size

    examples = sorted((Path(__file__).resolve().parent.parent / "assets" / "examples").glob("*.jpg"))
    auto = detector.load()  # routes each image to its track's default model
    explainers = {}
    for path in examples:
        name, reason = choose_track(image_size(str(path)))
        pred = auto.model(name)
        ex = explainers.setdefault(name, Explainer(pred))
        a = analyse(pred, str(path), ex, "GradCAM", reason=reason)
        assert a.model == name and a.reason == reason
        assert a.heatmaps[a.label].std() > 0.01, path.name  # the predicted class's map is never blank
        assert a.heatmaps[a.label].shape == (pred.input_size, pred.input_size)


@pytest.mark.parametrize("method", ["GradCAM", "EigenCAM"])
def test_analysis_verdict_from_the_explanation_pass_equals_a_plain_prediction(method):
    pred = _predictor("cnn")
    img = _image(3)
    a = analyse(pred, img, Explainer(pred), method)
    assert a.p_fake == pytest.approx(float(pred.predict_arrays(img[None])[0]), abs=1e-5)
    assert a.p_fake == pytest.approx(analyse(pred, img, None).p_fake, abs=1e-5)


@pytest.mark.parametrize("name", ["cnn", "wild"])
def test_both_class_maps_from_one_pass_equal_two_backward_passes(name):
    """heatmaps() derives the other class's map from the negated gradients of one backward pass; it must
    equal pytorch-grad-cam's batched two-target computation for every gradient method."""
    pred = detector.load(name)
    ex = Explainer(pred)
    img = np.asarray(Image.fromarray(_image(5)).resize((pred.input_size, pred.input_size)))
    for method in [m for m in CAM_METHODS if m != "ScoreCAM"]:
        fast, logit = ex.heatmaps_and_logit(img, method)
        slow, slow_logits = ex._maps(np.repeat(img[None], 2, axis=0), method, [1, 0])
        assert logit == pytest.approx(float(slow_logits[0]), abs=1e-4), method
        for got, want in zip((fast["fake"], fast["real"]), slow):
            # float32 rounding of a batch of 1 against a batch of 2 (GradCAM++ cubes gradients): well
            # under one step of the 8-bit colour map (1/255)
            assert np.allclose(got, want, atol=1e-3), (name, method, float(np.abs(got - want).max()))


def test_a_one_pixel_image_says_its_maps_have_nothing_to_show():
    import io

    from PIL import Image

    from detector.analysis import analyse
    from detector.predict import AutoPredictor
    from webapp.render import heatmap_views

    router = AutoPredictor()
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(buf, "PNG")
    pred, _ = router.pick(buf.getvalue())
    a = analyse(pred, buf.getvalue(), router.explainer(pred), with_evidence=False)
    assert "close to" not in a.size_note() and "only 1x1 pixels" in a.size_note()
    _, first, _, second = heatmap_views(a)
    assert "nothing to show" in first and "nothing to show" in second
