"""The checkpoints in checkpoints/ load (hash-checked), describe themselves and predict the example images."""

from pathlib import Path

import numpy as np
import pytest

import detector
from detector.checkpoint import read_record
from detector.predict import CHECKPOINT_DIR, DEFAULT_MODEL

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
    assert rec["name"] == name and rec["data_fingerprint"]
    for split in ("validation", "test", "test_dedup"):
        assert 0.5 < rec["metrics"][split]["accuracy"] <= 1.0
    assert rec["metrics"]["test"]["n"] == 20000 and rec["metrics"]["test_dedup"]["n"] == 20000 - 378
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
    assert "nobody/no-such-repo" in notes[0] and "using the local checkpoint" in notes[0]


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A Hub repository served from checkpoints/ into one folder, as the Hub's cache keeps one per repository;
    returns the (repo_id, filename) calls."""
    import shutil

    calls = []

    def fake_download(repo_id, filename, revision=None):  # stands in for huggingface_hub.hf_hub_download
        calls.append((repo_id, filename))
        dst = tmp_path / filename
        shutil.copy(ROOT / "checkpoints" / filename, dst)
        return str(dst)

    monkeypatch.setenv("DETECTOR_HUB_REPO", "org/fakespot")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    return calls


def test_hub_download_is_used_when_it_works(fake_hub, tmp_path):
    from detector import predict

    assert predict.resolve_model("cnn") == tmp_path / "cnn"
    assert fake_hub == [("org/fakespot", "cnn.json"), ("org/fakespot", "cnn.safetensors")]
    assert detector.load(tmp_path / "cnn").predict(EXAMPLES[0]) == detector.load("cnn").predict(EXAMPLES[0])


def test_hub_download_brings_the_backbone_a_head_names(fake_hub, tmp_path):
    from detector import predict

    assert predict.resolve_model("wild") == tmp_path / "wild"
    assert [f for _, f in fake_hub] == ["wild.json", "wild.safetensors", "clip_vit_b16.json", "clip_vit_b16.safetensors"]
    assert detector.load(tmp_path / "wild").predict(EXAMPLES[0]) == detector.load("wild").predict(EXAMPLES[0])
