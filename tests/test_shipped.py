"""The checkpoints in checkpoints/ load (hash-checked), describe themselves and predict the example images."""

import fnmatch
from pathlib import Path

import numpy as np
import pytest

import detector
from detector.checkpoint import read_record
from detector.predict import CHECKPOINT_DIR, DEFAULT_MODEL, shipped_models

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "assets" / "examples").glob("*.jpg") if p.name.startswith(("real_", "fake_")))
SHIPPED = ["cnn", "resnet50", "fakespot"]  # the CIFAKE track; the wild track is tested in test_wild.py


def test_every_model_is_shipped_and_the_track_defaults_come_first():
    names = detector.shipped_models()
    assert sorted(names) == sorted(SHIPPED + ["wild"])
    assert names[:2] == ["wild", "fakespot"] and DEFAULT_MODEL == "auto"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_loads_and_predicts(name):
    rec = read_record(CHECKPOINT_DIR / name)
    assert rec.name == name and rec.data_fingerprint
    for split in ("validation", "test", "test_dedup"):
        assert 0.5 < rec.metrics[split]["accuracy"] <= 1.0
    assert rec.metrics["test"]["n"] == 20000 and rec.metrics["test_dedup"]["n"] == 20000 - 378
    model = detector.load(name)
    p = model.predict(EXAMPLES)
    assert p.shape == (len(EXAMPLES),) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()


def test_default_model_tells_the_examples_apart_on_average():
    p = detector.load().predict(EXAMPLES)  # auto: the CIFAKE examples are 32x32, so the CIFAKE track judges
    fake = np.array(["fake_" in e.name for e in EXAMPLES])
    assert p[fake].mean() > p[~fake].mean()


def test_hub_download_failure_falls_back_to_local_and_says_so(monkeypatch):
    monkeypatch.setenv("DETECTOR_HUB_REPO", "nobody/no-such-repo")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network in tests: the download must fail fast
    notes: list[str] = []
    model = detector.load("cnn", notes=notes)
    assert model.name == "cnn" and len(notes) == 1
    assert "nobody/no-such-repo" in notes[0] and "using the local checkpoints" in notes[0]


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A Hub model repository holding ``cnn``, ``wild`` and its backbone, served by a stand-in for
    ``huggingface_hub.snapshot_download`` into a folder per revision; returns the calls made."""
    import shutil

    from detector import predict

    calls = []

    def fake_snapshot(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision))
        folder = tmp_path / str(revision)
        folder.mkdir(exist_ok=True)
        for stem in ("cnn", "wild", "clip_vit_b16"):
            for suffix in (".json", ".safetensors"):
                if any(fnmatch.fnmatch(stem + suffix, p) for p in allow_patterns):
                    shutil.copy(ROOT / "checkpoints" / (stem + suffix), folder)
        return str(folder)

    predict.hub_snapshot.cache_clear()
    monkeypatch.setenv("DETECTOR_HUB_REPO", "org/fakespot")
    monkeypatch.setenv("DETECTOR_HUB_REVISION", "0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    yield calls
    predict.hub_snapshot.cache_clear()


def test_hub_snapshot_is_used_at_the_pinned_revision(fake_hub, tmp_path):
    from detector import predict

    folder = tmp_path / "0123456789abcdef0123456789abcdef01234567"
    assert predict.resolve_model("cnn") == folder / "cnn"
    assert predict.resolve_model("wild") == folder / "wild"  # the backbone it names came in the same snapshot
    assert fake_hub == [("org/fakespot", "0123456789abcdef0123456789abcdef01234567")]  # one download for all
    assert shipped_models(folder) == ["wild", "cnn"]
    assert detector.load("cnn").predict(EXAMPLES[0]) == detector.load(ROOT / "checkpoints" / "cnn").predict(EXAMPLES[0])
    assert detector.load("wild").predict(EXAMPLES[0]) == detector.load(ROOT / "checkpoints" / "wild").predict(EXAMPLES[0])


def test_a_model_missing_from_the_hub_snapshot_falls_back_to_local_and_says_so(fake_hub):
    notes: list[str] = []
    model = detector.load("fakespot", notes=notes)
    assert model.name == "fakespot" and len(notes) == 1
    assert "has no model 'fakespot'" in notes[0] and "offers: wild, cnn" in notes[0]


def test_app_lists_the_models_the_hub_snapshot_holds(fake_hub):
    import app

    router, notes = app.load_models()
    models = router.predictors
    assert list(models) == ["wild", "cnn", "fakespot"]  # fakespot: missing on the Hub, taken locally
    assert any("org/fakespot" in n and "0123456789ab" in n for n in notes)
    assert any("has no model 'fakespot'" in n for n in notes)
