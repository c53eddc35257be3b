import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detector.checkpoint import save_checkpoint
from detector.record import Record
from detector.models import create_model

from .conftest import synthetic_image

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    stem = tmp_path / "ckpt" / "tiny"
    save_checkpoint(stem, create_model("cnn"), Record("cnn"))
    return stem


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(synthetic_image(0, rng)).save(d / "a.png")
    Image.fromarray(synthetic_image(1, rng, size=300)).save(d / "sub" / "b.jpg")
    (d / "sub" / "bad.jpg").write_bytes(b"this is text, not a JPEG")
    z = tmp_path / "more.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(d / "a.png", "x/y/c.png")
    return d, z


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "detector", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_predict_json_lines_and_bad_file_reported(tiny_checkpoint, inputs):
    folder, z = inputs
    r = run_cli("predict", folder, z, "--model", tiny_checkpoint, "--json")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    paths = sorted(row["path"] for row in rows)
    assert paths == sorted([str(folder / "a.png"), str(folder / "sub" / "b.jpg"), f"{z}:x/y/c.png"])
    for row in rows:
        assert isinstance(row["p_fake"], float) and 0.0 <= row["p_fake"] <= 1.0
        assert row["label"] == ("fake" if row["p_fake"] >= 0.5 else "real")
    assert f"{folder / 'sub' / 'bad.jpg'}" in r.stderr and "not a recognised image" in r.stderr
    assert "Traceback" not in r.stderr
    assert r.returncode == 1  # some input could not be read


def test_predict_table_output_and_same_numbers_as_the_api(tiny_checkpoint, inputs):
    from detector import load

    folder, _ = inputs
    r = run_cli("predict", folder / "a.png", "--model", tiny_checkpoint)
    assert r.returncode == 0, r.stderr
    header, line = r.stdout.strip().splitlines()
    assert header.split()[:4] == ["p_fake", "verdict", "model", "path"]
    p = float(line.split()[0])
    assert p == pytest.approx(load(tiny_checkpoint).predict(folder / "a.png"), abs=1e-4)


def test_unknown_model_and_missing_path_are_clear_errors(inputs, tiny_checkpoint):
    folder, _ = inputs
    r = run_cli("predict", folder / "a.png", "--model", "no-such-model")
    assert r.returncode == 2 and "unknown model 'no-such-model'" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("predict", folder / "missing.png", "--model", tiny_checkpoint, "--json")
    assert r.returncode == 1 and "missing.png: no such file" in r.stderr and r.stdout == ""


def test_predict_shows_provenance_evidence_and_can_skip_it(tiny_checkpoint, tmp_path):
    from bench import artefacts as art

    sd = tmp_path / "a1111.png"
    sd.write_bytes(art.png_with_text(art.photo_like(64, 64), {"parameters": art.A1111}))
    row = json.loads(run_cli("predict", sd, "--model", tiny_checkpoint, "--json").stdout)
    assert row["evidence_strength"] == "declared" and row["evidence_claim"] == "ai-generated"  # as in Batch's rows
    assert row["evidence_findings"][0]["details"]["Seed"] == "1234567890"
    table = run_cli("predict", sd, "--model", tiny_checkpoint).stdout
    assert "[declared: Generation parameters from AUTOMATIC1111/Forge" in table
    row = json.loads(run_cli("predict", sd, "--model", tiny_checkpoint, "--json", "--no-evidence").stdout)
    assert "evidence" not in row
