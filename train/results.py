"""Saved results of the research scripts: JSON files in docs/results/ that carry their own provenance."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from detector.checkpoint import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
FIGURES = ROOT / "docs" / "figures"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def save_result(name: str, data: dict, started: float | None = None) -> Path:
    """Write ``docs/results/NAME.json`` with the commit, the command line and the runtime added."""
    out = dict(data)
    out["provenance"] = {
        "commit": git_commit(),
        "command": "python -m " + " ".join(shlex.quote(a) for a in
                                           [sys.modules["__main__"].__spec__.name if getattr(
                                               sys.modules["__main__"], "__spec__", None) else sys.argv[0],
                                            *sys.argv[1:]]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.perf_counter() - started, 1) if started is not None else None,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
    }
    path = RESULTS / f"{name}.json"
    atomic_write_json(path, out)
    return path


def load_result(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None
