"""The residual network (the low-level signal at native resolution) and its fusion with a model's logit."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from detector.analysis import analyse, batch_rows
from detector.checkpoint import save_checkpoint
from detector.record import Record
from detector.engine import sigmoid
from detector.models import create_model
from detector.predict import load
from detector.residual import ALIGN, CROP, GRID, ResidualNet, grid_crops, image_logit, npr, positions


def test_crops_cover_the_image_on_the_jpeg_grid():
    for size in (64, 65, 200, 1201, 4000):
        ps = positions(size, GRID)
        assert ps[0] == 0 and all(p % ALIGN == 0 for p in ps) and max(ps) + CROP <= size
        assert size - (max(ps) + CROP) < ALIGN  # the last crop reaches the far edge (to within a block)
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8))
    crops, corners = grid_crops(img)
    assert crops.shape == (GRID * GRID, CROP, CROP, 3) and crops.dtype == np.uint8
    assert corners[0] == (0, 0) and corners[-1] == tuple(positions(500, GRID)[-1:] + positions(300, GRID)[-1:])


@pytest.mark.parametrize("mode,size", [("L", (40, 20)), ("P", (1, 1)), ("RGBA", (90, 70)), ("I;16", (128, 128))])
def test_any_mode_and_size_gives_rgb_crops(mode, size):
    crops, _ = grid_crops(Image.new(mode, size))
    assert crops.shape == (GRID * GRID, CROP, CROP, 3)


def test_the_residual_of_a_nearest_upsampled_image_is_zero():
    """What NPR measures: an image made by 2x nearest up-sampling has no residual; noise has one."""
    small = torch.rand(2, 3, 16, 16)
    up = torch.nn.functional.interpolate(small, scale_factor=2.0, mode="nearest")
    assert torch.equal(npr(up), torch.zeros_like(up))
    assert npr(torch.rand(2, 3, 32, 32)).abs().mean() > 0.1


@pytest.fixture
def fused(tmp_path):
    """A small CIFAKE-style model fused with a residual network, both saved as checkpoints."""
    torch.manual_seed(0)
    res = ResidualNet(4)
    save_checkpoint(tmp_path / "res", res, Record("residual", {"width": 4}, input_size=CROP))
    cnn = create_model("cnn")
    rec = Record("cnn", {}, fusion={"residual": str(tmp_path / "res"), "weights": [0.7, 1.3], "bias": -0.2})
    save_checkpoint(tmp_path / "fused", cnn, rec)
    return load(tmp_path / "fused"), res


def test_a_fused_model_combines_its_logit_with_the_residual_one(fused):
    pred, res = fused
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (150, 220, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    data = buf.getvalue()
    clip_logit = pred.logits(pred.preprocess(data))[0]
    res_logit = image_logit(res.eval(), img)[0]
    want = float(sigmoid(0.7 * clip_logit + 1.3 * res_logit - 0.2))
    assert pred.predict(data) == pytest.approx(want, abs=1e-5)
    assert pred.predict(io.BytesIO(data)) == pytest.approx(want, abs=1e-5)  # a file object is read twice
    a = analyse(pred, data, with_stats=False, with_evidence=False)
    assert a.p_fake == pytest.approx(want, abs=1e-5)
    assert len(a.residual_tiles) == GRID * GRID
    assert all(0 <= t["box"][0] < t["box"][2] <= 220 and 0 <= t["box"][1] < t["box"][3] <= 150 for t in a.residual_tiles)


def test_batch_rows_give_the_fused_score(fused, tmp_path):
    pred, _ = fused
    rng = np.random.default_rng(2)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (100 + 30 * i, 90, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    rows = [r for chunk, _, _ in batch_rows(pred, [tmp_path / f"{i}.png" for i in range(3)], with_evidence=False,
                                            with_stats=False) for r in chunk]
    assert len(rows) == 3 and all("_residual" not in r for r in rows)
    for i, r in enumerate(rows):
        assert r["p_fake"] == pytest.approx(pred.predict(str(tmp_path / f"{i}.png")), abs=1e-5)


def test_a_residual_run_stopped_after_an_epoch_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from argparse import Namespace

    import train.train_residual as tr

    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (24, 2, CROP, CROP, 3), dtype=np.uint8)
    y, w = np.array([0, 1] * 12), np.ones(24)
    args = Namespace(seed=0, width=4, lr=2e-3, epochs=2, samples_per_epoch=16, batch_size=8)
    whole = tr.fit(crops, y, w, args, tmp_path / "whole.state")

    real_save, calls = tr.save_state, []

    def save_then_stop(path, state):  # the process dies right after its first epoch's state is written
        real_save(path, state)
        calls.append(path)
        raise KeyboardInterrupt

    monkeypatch.setattr(tr, "save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        tr.fit(crops, y, w, args, tmp_path / "stopped.state")
    epochs_run = []
    monkeypatch.setattr(tr, "save_state", lambda path, state: (epochs_run.append(state["epoch"]), real_save(path, state)))
    resumed = tr.fit(crops, y, w, args, tmp_path / "stopped.state")
    assert len(calls) == 1 and epochs_run == [2]  # it went on from the saved epoch, not from the start
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
