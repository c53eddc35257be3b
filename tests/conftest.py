"""Shared fixtures: small synthetic REAL/FAKE image sets that a model can learn from quickly."""

from __future__ import annotations

import io
import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(1)
# The app sets its threads when imported (webapp/serving.py): the same one thread, so tests that
# compare a run in this process with one in a subprocess (OMP_NUM_THREADS=1) compute alike.
os.environ["DETECTOR_THREADS"] = "1"


def synthetic_image(label: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """REAL: smooth gradients plus mild noise; FAKE: the same with a strong high-frequency checker."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([yy * rng.uniform(80, 200), xx * rng.uniform(80, 200),
                     (xx + yy) * rng.uniform(40, 100)], -1) + rng.uniform(20, 60)
    if label:
        checker = ((np.indices((size, size)).sum(0) % 2) * 2 - 1)[..., None] * 30
        base = base + checker
    base = base + rng.normal(0, 3, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def write_dataset(root: Path, n_per_class: int = 24, seed: int = 0, fmt: str = "PNG") -> Path:
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(("REAL", "FAKE")):
        d = root / "train" / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(synthetic_image(label, rng)).save(d / f"{i} ({label}).{fmt.lower()}", fmt)
    return root


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data")


@pytest.fixture
def dataset_zip(tmp_path: Path) -> Path:
    src = write_dataset(tmp_path / "src")
    zpath = tmp_path / "data.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(src.rglob("*.png")):
            zf.write(f, f.relative_to(src).as_posix())
    return zpath


def png_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def uploaded(path: str | os.PathLike) -> str:
    """``path`` copied into Gradio's upload folder (into a fresh sub-folder, keeping its name byte for byte), as
    an upload through the page or the API puts it there: the app's handlers open no other file (app._upload)."""
    import shutil
    import uuid

    from gradio import utils

    folder = Path(utils.get_upload_folder()) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return shutil.copyfile(path, folder / Path(path).name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """The app, launched on a free loopback port for one test module; its URL."""
    import app

    _, url, _ = app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield url
    app.demo.close()
