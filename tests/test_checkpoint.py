import json

import numpy as np
import pytest
import torch

from detector.checkpoint import (CheckpointError, load_checkpoint, load_state, read_record, save_checkpoint, save_state,
                                 update_record)
from detector.models import create_model
from detector.predict import load
from detector.record import Record


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = create_model("fakespot", widths=[8, 16], blocks=[1, 1])
    rec = save_checkpoint(tmp_path / "m", model, Record("fakespot", {"widths": [8, 16], "blocks": [1, 1]}))
    return tmp_path / "m", model, rec


def test_round_trip_gives_identical_predictions(saved):
    stem, model, rec = saved
    x = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    p1 = load(stem).predict(list(x))
    model2, rec2 = load_checkpoint(str(stem) + ".safetensors")
    assert rec2.weights_sha256 == rec.weights_sha256
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    p2 = load(str(stem) + ".json").predict(list(x))
    assert p1.shape == (6,) and np.array_equal(p1, p2)
    assert ((p1 > 0) & (p1 < 1)).all()


def test_record_is_self_describing(saved):
    stem, _, _ = saved
    rec = json.loads((stem.parent / "m.json").read_text())  # the file itself, as another tool would read it
    for key in ("arch", "arch_kwargs", "input_size", "mean", "std", "classes", "threshold", "temperature",
                "train_args", "data_fingerprint", "metrics", "versions", "weights_sha256"):
        assert key in rec
    assert rec["classes"] == ["real", "fake"] and rec["temperature"] == 1.0


def test_truncated_weights_are_refused(saved):
    stem, _, _ = saved
    w = stem.parent / "m.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated, corrupt or from another checkpoint"):
        load_checkpoint(stem)


def test_garbage_weights_without_hash_are_refused(saved):
    stem, _, _ = saved
    update_record(stem, weights_sha256=None)
    (stem.parent / "m.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(stem)


def test_corrupt_record_is_refused(saved):
    stem, _, _ = saved
    (stem.parent / "m.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(stem)


def test_mismatched_architecture_is_refused(saved):
    stem, _, _ = saved
    update_record(stem, arch_kwargs={"widths": [8, 32], "blocks": [1, 1]})
    with pytest.raises(CheckpointError, match="do not fit architecture"):
        load_checkpoint(stem)


def test_missing_files_and_unknown_models_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="unknown model 'nope'"):
        load("nope")


def test_failed_write_leaves_the_old_file(saved, monkeypatch):
    stem, model, _ = saved
    before = (stem.parent / "m.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError):
        save_checkpoint(stem, create_model("fakespot", widths=[8, 16], blocks=[1, 1]), Record("fakespot"))
    assert (stem.parent / "m.safetensors").read_bytes() == before
    assert not list(stem.parent.glob(".*.tmp"))


def test_training_state_round_trip_without_pickle(tmp_path):
    model = create_model("cnn")
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    save_state(tmp_path / "s", {"optimizer": opt.state_dict(), "epoch": 3, "history": [{"a": 1.5}], "none": None})
    s = load_state(tmp_path / "s")
    assert s["epoch"] == 3 and s["history"] == [{"a": 1.5}] and s["none"] is None
    opt2 = torch.optim.AdamW(model.parameters())
    opt2.load_state_dict(s["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    (tmp_path / "s.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        load_state(tmp_path / "s")


def test_half_storage_halves_the_file_and_predicts_almost_the_same(saved, tmp_path):
    stem, model, _ = saved
    x = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    big = create_model("cnn")
    save_checkpoint(tmp_path / "f32", big, Record("cnn"))
    rec = save_checkpoint(tmp_path / "f16", big, Record("cnn"), half=True)
    assert rec.weights_storage.startswith("float16")
    size = lambda n: (tmp_path / f"{n}.safetensors").stat().st_size  # noqa: E731
    assert size("f16") < 0.6 * size("f32")
    m16, _ = load_checkpoint(tmp_path / "f16")
    assert all(p.dtype == torch.float32 for p in m16.parameters())
    assert np.allclose(load(tmp_path / "f16").predict(list(x)), load(tmp_path / "f32").predict(list(x)), atol=1e-3)
    assert oct((tmp_path / "f16.json").stat().st_mode & 0o777) != oct(0o600)


def test_a_record_field_nobody_reads_is_refused_when_written_and_when_read(saved):
    stem, _, _ = saved
    with pytest.raises(TypeError, match="training_seconds"):  # the typo that hid the wild model's training time
        Record("cnn", training_seconds=12.0)
    with pytest.raises(TypeError, match="training_seconds"):
        update_record(stem, training_seconds=12.0)
    raw = json.loads((stem.parent / "m.json").read_text())
    (stem.parent / "m.json").write_text(json.dumps(dict(raw, training_seconds=12.0)))
    with pytest.raises(CheckpointError, match=r"unknown record field\(s\) \['training_seconds'\]"):
        load_checkpoint(stem)


def test_a_record_round_trips_and_reads_back_without_this_process_versions(saved):
    stem, _, rec = saved
    back = read_record(stem)
    assert back == rec and back.track == "cifake" and not back.wild and back.kind == "detector"
    raw = json.loads((stem.parent / "m.json").read_text())
    del raw["versions"]
    (stem.parent / "m.json").write_text(json.dumps(raw))
    assert read_record(stem).versions is None  # never filled in with the reader's library versions


@pytest.mark.parametrize("band, edges", [(None, (0.45, 0.75)), (0.1, (0.5, 0.7)), ([0.3, 0.6], (0.3, 0.6)), (0.9, (0.0, 1.0))])
def test_the_uncertain_band_is_a_margin_or_its_edges(band, edges):
    assert Record("cnn", threshold=0.6, uncertain_band=band).band() == pytest.approx(edges)
