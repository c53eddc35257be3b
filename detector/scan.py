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
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from .analysis import batch_rows, judge_items
from .data import UnpackBudget, count_images, folder_images, iter_sources, printable
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


def stored(out: Path) -> list[Path]:
    """The finished file, if any, and the parts written since (local chunks and merged Ray shards)."""
    return ([out] if out.exists() else []) + sorted(parts_dir(out).glob("part-*.parquet"))


def done_paths(out: Path) -> set[str]:
    """Paths already in the finished file or its parts (a resumed scan skips them)."""
    return {p for f in stored(out) for p in pq.read_table(f, columns=["path"]).column("path").to_pylist()}


def to_row(r: dict) -> dict:
    return {"path": r["file"], "sha256": r.get("sha256"), "width": r.get("width"), "height": r.get("height"),
            "p_fake": r.get("p_fake"), "verdict": r.get("verdict"), "model": r.get("model"),
            "evidence": r.get("evidence") or None, "evidence_strength": r.get("evidence_strength") or None,
            "error": r.get("reason") if "p_fake" not in r else None}


def write_part(folder: Path, rows: list[dict], n: int) -> None:
    """One chunk as part ``n``, written to a temporary name and renamed: a part is whole or absent."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".part-{n:06d}.tmp"
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
    os.replace(tmp, folder / f"part-{n:06d}.parquet")


def finish(out: Path) -> pa.Table:
    """The finished file and the parts merged into ``out`` (atomically), and the parts removed."""
    files = stored(out)
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
    # Fault injection for the tests: the process SIGKILLs itself (and its decoder workers) once this many parts
    # are written, to prove a killed scan resumes to every image once. Unset in real use.
    kill_after = int(os.environ.get("FAKESPOT_FAULT_KILL_AFTER_PARTS", "0"))
    t0 = time.perf_counter()
    total = count_images(paths)
    new, n_part = 0, len(list(parts_dir(out).glob("part-*.parquet")))  # a resumed scan numbers on
    with tqdm(total=total, initial=0, desc="scan", unit="img", file=sys.stderr, disable=not progress,
              mininterval=1.0, smoothing=0.1) as bar:
        seen = 0
        for rows, errors, done in batch_rows(predictor, paths, chunk=chunk, with_evidence=with_evidence,
                                             with_stats=False, budget=UnpackBudget(), workers=workers, skip=skip):
            part = [to_row(r) for r in rows] + [to_row(e) for e in errors]
            if part:
                write_part(parts_dir(out), part, n_part)
                new, n_part = new + len(part), n_part + 1
                if kill_after and n_part >= kill_after:
                    os.killpg(os.getpgrp(), signal.SIGKILL)
            bar.update(done - seen)
            seen = done
    return summarise(finish(out), new, len(skip), time.perf_counter() - t0)


def summarise(table: pa.Table, new: int, skipped: int, seconds: float) -> dict:
    """Counts per verdict and per model over the whole file, and this run's speed."""
    return {"images": table.num_rows, "new": new, "skipped": skipped, "seconds": round(seconds, 1),
            "images_per_second": round(new / seconds, 2) if seconds else None,
            "verdicts": dict(Counter(v or "error" for v in table.column("verdict").to_pylist())),
            "models": dict(Counter(m or "-" for m in table.column("model").to_pylist()))}


def ray_items(sources: list[str], skip: set[str]) -> list[str]:
    """What the Ray scan hands out: one entry per image file (folders expanded here, files already in ``skip``
    dropped), and each zip, missing path or empty folder whole (the actor reads it with ``iter_sources``)."""
    out = []
    for src in expand(sources):
        p = Path(src)
        if p.is_dir():
            files = [str(f) for f in folder_images(p)]
            out += [f for f in files if f not in skip] if files else [src]
        elif src not in skip:
            out.append(src)
    return out


class RayScorer:
    """A Ray actor: the model loaded once, then each batch of sources judged by ``analysis.judge_items``."""

    def __init__(self, model: str | None, with_evidence: bool, skip: frozenset[str], precision: str | None = None
                 ) -> None:
        import torch

        from .predict import load

        torch.set_num_threads(1)
        self.predictor, self.with_evidence, self.skip = load(model, precision=precision), with_evidence, skip

    def __call__(self, batch: dict) -> pa.Table:
        def items():
            for src in batch["source"]:
                for name, data, err in iter_sources([str(src)], UnpackBudget()):
                    shown = printable(name)  # as batch_rows shows a path
                    if shown not in self.skip:
                        yield shown, data, err

        rows = [to_row(r) for chunk_rows, errors in judge_items(self.predictor, items(), 64, self.with_evidence,
                                                                with_stats=False) for r in chunk_rows + errors]
        return pa.Table.from_pylist(rows, schema=SCHEMA)


def scan_ray(model: str | None, sources: list[str], out: str | os.PathLike, address: str | None = None,
             actors: int = 2, batch_size: int = 16, with_evidence: bool = True, precision: str | None = None) -> dict:
    """The same scan on a Ray cluster (``address``; None starts a local Ray): sources handed out by Ray Data,
    ``map_batches`` over an actor pool that loads the model once per actor, Parquet shards written by Ray,
    then merged into ``out`` with what it already held (a rerun skips those paths). ``precision``: the wild
    backbone's arithmetic in every actor (as ``load``'s; a cluster's workers may not share this environment)."""
    import ray

    out = Path(out)
    skip = done_paths(out)
    todo = ray_items(sources, skip)
    t0 = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 **({} if address else {"num_cpus": max(actors, 1)}))
    shards = out.with_name(out.name + ".ray")
    shutil.rmtree(shards, ignore_errors=True)
    if todo:
        ds = ray.data.from_items([{"source": s} for s in todo])
        ds = ds.map_batches(RayScorer, fn_constructor_kwargs={"model": model, "with_evidence": with_evidence,
                                                              "skip": frozenset(skip), "precision": precision},
                            batch_size=batch_size, concurrency=actors, num_cpus=1, batch_format="numpy")
        ds.write_parquet(str(shards))
    parts = parts_dir(out)
    parts.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(sorted(shards.glob("*.parquet")) if shards.is_dir() else []):
        os.replace(f, parts / f"part-ray-{i:06d}.parquet")
    shutil.rmtree(shards, ignore_errors=True)
    new = sum(pq.read_metadata(f).num_rows for f in parts.glob("part-ray-*.parquet"))
    return summarise(finish(out), new, len(skip), time.perf_counter() - t0)
