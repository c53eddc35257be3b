"""The Batch tab's downloads: a CSV a spreadsheet opens safely and a JSON with every finding.

Exports live in a temporary folder, one sub-folder per request, pruned after ``EXPORT_MAX_AGE_S``.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path

EXPORT_DIR = Path(tempfile.gettempdir()) / "fakespot-exports"
EXPORT_MAX_AGE_S = 3600
# Cells that a spreadsheet would run as a formula (OWASP's list): =, +, -, @, tab and carriage return.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(row: dict) -> dict:
    """A CSV row a spreadsheet will not run: text cells that start like a formula get a leading apostrophe,
    which spreadsheets show as text. File names are chosen by whoever made the upload."""
    return {k: ("'" + v if isinstance(v, str) and v[:1] in FORMULA_STARTS else v) for k, v in row.items()}


def prune(folder: Path = EXPORT_DIR, max_age_s: float = EXPORT_MAX_AGE_S) -> None:
    now = time.time()
    for d in folder.glob("*"):
        if d.is_dir() and now - d.stat().st_mtime > max_age_s:
            shutil.rmtree(d, ignore_errors=True)


def write_exports(rows: list[dict], errors: list[dict], columns: list[str], meta: dict,
                  folder: Path = EXPORT_DIR) -> tuple[Path, Path]:
    """``fakespot_results.csv`` (the ``columns``, then one line per unreadable file) and ``fakespot_results.json``
    (``meta``, every row with its findings, the errors), in a fresh sub-folder of ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    prune(folder)
    out = folder / uuid.uuid4().hex
    out.mkdir()
    with open(out / "fakespot_results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns + ["error"], extrasaction="ignore")  # findings: in the JSON
        w.writeheader()
        w.writerows(map(csv_safe, rows))
        w.writerows(csv_safe({"file": e["file"], "error": e["reason"]}) for e in errors)
    with open(out / "fakespot_results.json", "w", encoding="utf-8") as f:
        json.dump({**meta, "results": rows, "errors": errors}, f, indent=1)
    return out / "fakespot_results.csv", out / "fakespot_results.json"
