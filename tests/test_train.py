import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from detector.checkpoint import load_checkpoint
from detector.models import create_model
from detector.preprocess import normalize, to_batch
from train.engine import train_one_epoch
from train.train import get_args_parser, main

from .conftest import synthetic_image

ROOT = Path(__file__).resolve().parent.parent


def _args(data, out, *extra):
    return get_args_parser().parse_args(["--model", "fakespot", "--model-kwargs", '{"widths": [8, 16], "blocks": [1, 1]}',
                                         "--data", str(data), "--out", str(out), "--batch-size", "16",
                                         "--val-fraction", "0.25", "--no-progress", "--amp", "none", *extra])


def test_one_training_step_lowers_the_loss_on_a_tiny_batch():
    rng = np.random.default_rng(0)
    x = to_batch([synthetic_image(i % 2, rng) for i in range(16)])
    y = torch.arange(16) % 2
    torch.manual_seed(0)
    model = create_model("cnn")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss() -> float:
        with torch.no_grad():
            return F.binary_cross_entropy_with_logits(model.eval()(normalize(x)), y.float()).item()

    before = loss()
    train_one_epoch(model, opt, None, x, y, [torch.arange(16)], torch.device("cpu"), None, torch.Generator(),
                    progress=False)
    assert loss() < before


def test_training_writes_checkpoints_history_and_curves(dataset_dir, tmp_path):
    out = tmp_path / "run"
    main(_args(dataset_dir, out, "--epochs", "2"))
    for f in ("last.json", "last.safetensors", "best.json", "last.state.json", "history.json", "curves.png"):
        assert (out / f).exists(), f
    hist = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [1, 2]
    model, rec = load_checkpoint(out / "best")
    assert rec.train_args["epochs"] == 2 and rec.data_fingerprint and "validation" in rec.metrics


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(dataset_dir, tmp_path):
    main(_args(dataset_dir, tmp_path / "a", "--epochs", "3"))
    main(_args(dataset_dir, tmp_path / "b", "--epochs", "3", "--stop-after", "1"))
    assert json.loads((tmp_path / "b" / "history.json").read_text())[-1]["epoch"] == 1
    main(_args(dataset_dir, tmp_path / "b", "--epochs", "3", "--resume"))
    wa, _ = load_checkpoint(tmp_path / "a" / "last")
    wb, _ = load_checkpoint(tmp_path / "b" / "last")
    for x, y in zip(wa.state_dict().values(), wb.state_dict().values()):
        assert torch.equal(x, y)


def test_run_killed_mid_epoch_resumes_to_the_same_result(dataset_dir, tmp_path):
    """A real SIGKILL in the middle of epoch 2 (2 steps per epoch here); --resume then finishes the run."""
    main(_args(dataset_dir, tmp_path / "a", "--epochs", "3"))
    cmd = [sys.executable, "-m", "train.train", "--model", "fakespot", "--model-kwargs",
           '{"widths": [8, 16], "blocks": [1, 1]}', "--data", str(dataset_dir), "--out", str(tmp_path / "b"),
           "--batch-size", "16", "--val-fraction", "0.25", "--no-progress", "--amp", "none", "--epochs", "3"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "FAKESPOT_FAULT_KILL_AT_STEP": "3", "OMP_NUM_THREADS": "1"})
    assert r.returncode == -9, r.stderr[-2000:]
    assert [h["epoch"] for h in json.loads((tmp_path / "b" / "history.json").read_text())] == [1]
    main(_args(dataset_dir, tmp_path / "b", "--epochs", "3", "--resume"))
    wa, _ = load_checkpoint(tmp_path / "a" / "last")
    wb, rb = load_checkpoint(tmp_path / "b" / "last")
    assert rb.epoch == 3
    for x, y in zip(wa.state_dict().values(), wb.state_dict().values()):
        assert torch.equal(x, y)


def test_resume_with_other_epochs_is_refused(dataset_dir, tmp_path):
    main(_args(dataset_dir, tmp_path / "a", "--epochs", "2", "--stop-after", "1"))
    with pytest.raises(SystemExit, match="same values"):
        main(_args(dataset_dir, tmp_path / "a", "--epochs", "3", "--resume"))


def test_two_process_ddp_training_step(dataset_dir, tmp_path):
    """torchrun with two CPU processes (gloo) trains a few steps and writes one checkpoint."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "train.train", "--model", "cnn", "--data", str(dataset_dir), "--out", str(out),
           "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.25", "--max-epoch-steps", "2",
           "--no-progress", "--amp", "none", "--threads", "1"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "world size 2" in r.stdout
    model, rec = load_checkpoint(out / "last")
    assert rec.epoch == 1


@pytest.mark.parametrize("which", ["best", "last"])
def test_ship_installs_the_chosen_checkpoint_and_measures_it(dataset_dir, tmp_path, monkeypatch, which):
    from train import ship

    run = tmp_path / "run"
    main(_args(dataset_dir, run, "--epochs", "2"))
    images = sorted(dataset_dir.rglob("*.png"))
    seen = tmp_path / "seen"  # two of the test images, as if they were also training images
    seen.mkdir()
    for f in images[:2]:
        (seen / f.name).write_bytes(f.read_bytes())
    monkeypatch.chdir(tmp_path)  # ship writes its plots under runs/eval/NAME
    monkeypatch.setattr(sys, "argv", ["ship", "--run", str(run), "--checkpoint", which, "--name", "mine",
                                      "--test", str(dataset_dir), "--dedup", str(seen), "--dir", str(tmp_path / "ckpt")])
    ship.main()
    shipped, rec = load_checkpoint(tmp_path / "ckpt" / "mine")
    source, src_rec = load_checkpoint(run / which)
    hist = json.loads((run / "history.json").read_text())
    wanted = min(hist, key=lambda h: h["val_loss"])["epoch"] if which == "best" else 2
    assert rec.name == "mine" and rec.epoch == src_rec.epoch == wanted
    assert rec.metrics["test"]["n"] == len(images) and rec.metrics["test_dedup"]["n"] == len(images) - 2
    for x, y in zip(shipped.state_dict().values(), source.state_dict().values()):
        assert torch.equal(x, y)
