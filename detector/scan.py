"""Scan a dataset into one Parquet file: ``python -m detector scan SOURCE... --out RESULTS.parquet``.

Sources are folders (searched recursively), zips, images and text files listing one path per line. Each
image gives one row (``COLUMNS``); a file that cannot be read gives a row with its reason in ``error``,
never a stopped scan. The rows are ``analysis.batch_rows``' (the pipeline of Batch and ``predict``),
decoded by a pool of worker processes while this one runs the model.

Resumable: every finished chunk is written at once as a Parquet part in ``RESULTS.parquet.parts/`` (each
part atomically), and a rerun skips every file a part already holds. At the end the parts become
``RESULTS.parquet`` (atomically) and the folder goes, so a scan killed at any point and rerun ends with
every image exactly once.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .analysis import batch_rows
from .data import UnpackBudget, count_images
from .predict import CIFAKE_MODEL, WILD_MODEL, AutoPredictor, Predictor

SCHEMA = pa.schema([
    ("path", pa.string()), ("sha256", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
    ("p_fake", pa.float32()), ("verdict", pa.string()), ("model", pa.string()), ("evidence", pa.string()),
    ("evidence_strength", pa.string()), ("error", pa.string()),
])
COLUMNS = SCHEMA.names


def expand(sources: list[str]) -> list[str]:
    """Sources with every ``.txt`` list replaced by the paths it names (one per line; blank lines and
    lines starting with # are skipped; relative paths are relative to the list's folder)."""
    out = []
    for src in sources:
        p = Path(src)
        if p.suffix.lower() == ".txt" and p.is_file():
            for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    out.append(str(p.parent / line) if not os.path.isabs(line) else line)
        else:
            out.append(str(src))
    return out


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def done_paths(out: Path) -> set[str]:
    """Paths already in the finished file or its parts (a resumed scan skips them)."""
    files = ([out] if out.exists() else []) + sorted(parts_dir(out).glob("part-*.parquet"))
    return {p for f in files for p in pq.read_table(f, columns=["path"]).column("path").to_pylist()}


def to_row(r: dict) -> dict:
    return {"path": r["file"], "sha256": r.get("sha256"), "width": r.get("width"), "height": r.get("height"),
            "p_fake": r.get("p_fake"), "verdict": r.get("verdict"), "model": r.get("model"),
            "evidence": r.get("evidence") or None, "evidence_strength": r.get("evidence_strength") or None,
            "error": r.get("reason") if "p_fake" not in r else None}


def write_part(folder: Path, rows: list[dict]) -> None:
    """One chunk as the next part, written to a temporary name and renamed: a part is whole or absent."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(list(folder.glob("part-*.parquet")))
    tmp = folder / f".part-{n:06d}.tmp"
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
    os.replace(tmp, folder / f"part-{n:06d}.parquet")


def finish(out: Path) -> pa.Table:
    """The finished file and the parts merged into ``out`` (atomically), and the parts removed."""
    files = ([out] if out.exists() else []) + sorted(parts_dir(out).glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files]) if files else SCHEMA.empty_table()
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out)
    shutil.rmtree(parts_dir(out), ignore_errors=True)
    return table


def scan(predictor: Predictor | AutoPredictor, sources: list[str], out: str | os.PathLike, workers: int = 1,
         chunk: int = 64, with_evidence: bool = True, progress: bool = True) -> dict:
    """Scan ``sources`` into ``out``; returns the summary (counts per verdict and per model, of the whole file)."""
    out = Path(out)
    paths = expand(sources)
    skip = done_paths(out)
    if isinstance(predictor, AutoPredictor):  # load both tracks before the workers fork
        for name in (WILD_MODEL, CIFAKE_MODEL):
            predictor.model(name)
    t0 = time.perf_counter()
    total = count_images(paths)
    new = 0
    with tqdm(total=total, initial=0, desc="scan", unit="img", file=sys.stderr, disable=not progress,
              mininterval=1.0, smoothing=0.1) as bar:
        seen = 0
        for rows, errors, done in batch_rows(predictor, paths, chunk=chunk, with_evidence=with_evidence,
                                             with_stats=False, budget=UnpackBudget(), workers=workers, skip=skip):
            part = [to_row(r) for r in rows] + [to_row(e) for e in errors]
            if part:
                write_part(parts_dir(out), part)
                new += len(part)
            bar.update(done - seen)
            seen = done
    table = finish(out)
    seconds = time.perf_counter() - t0
    summary = {"images": table.num_rows, "new": new, "skipped": len(skip), "seconds": round(seconds, 1),
               "images_per_second": round(new / seconds, 2) if seconds else None,
               "verdicts": dict(Counter(v or "error" for v in table.column("verdict").to_pylist())),
               "models": dict(Counter(m or "-" for m in table.column("model").to_pylist()))}
    return summary
