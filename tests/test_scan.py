"""``python -m detector scan``: one Parquet row per image, bad files as rows, resumable after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from detector.predict import load
from detector.scan import COLUMNS, parts_dir, scan

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def mixed(tmp_path) -> tuple[list[str], set[str]]:
    """Thumbnails, full-size images, a zip, a text list and hostile files; returns the sources and every
    path a row must carry."""
    rng = np.random.default_rng(0)
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    expected = set()
    for i in range(14):
        size = (32, 32) if i % 2 else (300 + 10 * i, 200)
        f = d / ("sub" if i % 3 == 0 else "") / f"img{i}.{'png' if i % 4 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(f)
        expected.add(str(f))
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "empty.jpg").write_bytes(b"")
    expected |= {str(d / "broken.png"), str(d / "empty.jpg")}
    z = tmp_path / "more.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(3):
            p = tmp_path / f"z{i}.png"
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(p)
            zf.write(p, f"inner/z{i}.png")
            expected.add(f"{z}:inner/z{i}.png")
    listed = tmp_path / "listed.png"
    Image.fromarray(rng.integers(0, 256, (64, 90, 3), dtype=np.uint8)).save(listed)
    lst = tmp_path / "list.txt"
    lst.write_text(f"# a list of paths\n{listed.name}\n\nmissing.png\n")
    expected |= {str(listed), str(tmp_path / "missing.png")}
    return [str(d), str(z), str(lst)], expected


def read(out: Path) -> dict[str, dict]:
    rows = pq.read_table(out).to_pylist()
    by_path = {r["path"]: r for r in rows}
    assert len(by_path) == len(rows), "a path appears twice"
    return by_path


def test_every_image_is_one_row_and_bad_files_are_rows_with_their_reason(mixed, tmp_path):
    sources, expected = mixed
    summary = scan(load("cnn"), sources, tmp_path / "out.parquet", workers=0, chunk=4, progress=False)
    rows = read(tmp_path / "out.parquet")
    assert set(rows) == expected and summary["images"] == len(expected)
    assert pq.read_schema(tmp_path / "out.parquet").names == COLUMNS
    bad = {p: r for p, r in rows.items() if r["error"]}
    assert set(bad) == {p for p in expected if p.endswith(("broken.png", "empty.jpg", "missing.png"))}
    assert all(r["p_fake"] is None and r["verdict"] is None for r in bad.values())
    good = [r for p, r in rows.items() if p not in bad]
    assert all(0 <= r["p_fake"] <= 1 and r["verdict"] in ("real", "uncertain", "fake") and len(r["sha256"]) == 64
               for r in good)
    assert summary["verdicts"].get("error") == 3 and sum(summary["verdicts"].values()) == len(expected)
    assert not parts_dir(tmp_path / "out.parquet").exists()


def test_parallel_decoders_give_the_same_rows(mixed, tmp_path):
    sources, _ = mixed
    pred = load("cnn")
    scan(pred, sources, tmp_path / "serial.parquet", workers=0, chunk=5, progress=False)
    scan(pred, sources, tmp_path / "pool.parquet", workers=2, chunk=5, progress=False)
    assert read(tmp_path / "serial.parquet") == read(tmp_path / "pool.parquet")


def test_a_scan_killed_partway_and_rerun_has_every_image_once(mixed, tmp_path):
    sources, expected = mixed
    out = tmp_path / "killed.parquet"
    cmd = [sys.executable, "-m", "detector", "scan", *sources, "--out", str(out), "--model", "cnn", "--chunk", "2",
           "--workers", "1", "--no-evidence"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The scan SIGKILLs itself and its decoder workers after its second part (a kill from outside raced a fast
    # machine, which finished every part first).
    killed = subprocess.run(cmd, cwd=ROOT, env={**env, "FAKESPOT_FAULT_KILL_AFTER_PARTS": "2"}, capture_output=True,
                            timeout=300, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    parts = list(parts_dir(out).glob("part-*.parquet"))
    assert parts and not out.exists(), "the kill came too late to test a resume"
    first = {p for f in parts for p in pq.read_table(f).column("path").to_pylist()}
    assert 0 < len(first) < len(expected)
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(first)} already there" in rerun.stdout
    assert set(read(out)) == expected
    whole = tmp_path / "whole.parquet"
    scan(load("cnn"), sources, whole, workers=0, chunk=7, with_evidence=False, progress=False)
    assert read(out) == read(whole)  # the resumed file holds exactly what one uninterrupted scan gives


def test_a_ray_scan_gives_the_local_scan_rows(mixed, tmp_path):
    """The same mixed sources through a local Ray (Ray Data, an actor pool) and through the local scan."""
    pytest.importorskip("ray")
    import ray

    from detector.scan import scan_ray

    sources, expected = mixed
    scan(load("cnn"), sources, tmp_path / "local.parquet", workers=0, chunk=5, progress=False)
    try:
        summary = scan_ray("cnn", sources, tmp_path / "ray.parquet", actors=2, batch_size=3)
    finally:
        ray.shutdown()
    local, remote = read(tmp_path / "local.parquet"), read(tmp_path / "ray.parquet")
    assert set(remote) == expected and summary["new"] == len(expected)
    for path, row in local.items():
        other = remote[path]
        assert other["p_fake"] == pytest.approx(row["p_fake"], abs=1e-5), path
        assert {k: v for k, v in other.items() if k != "p_fake"} == {k: v for k, v in row.items() if k != "p_fake"}, path
