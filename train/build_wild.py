"""Build the wild track's image set from public repository snapshots: manifest in git, images never.

    python -m train.build_wild --mirrors /work/.mirror            # scan the sources -> manifest + images
    python -m train.build_wild --mirrors /work/.mirror --rebuild  # re-extract the manifest's files only

Each source in ``train/wild_sources.json`` is one repository at one commit (the split unit: no source
is in two splits). Its rules pick files by path pattern (optionally from the repository's history
too) and give each its label and generator. Every candidate is decoded; files that are not still
images or are under ``MIN_SIDE`` pixels on their short side are skipped; any whose SHA-256 is in the
reserved list (``shared/data/reserved_sha256.txt``: images kept for an independent evaluation) is
dropped and counted, as are exact duplicates and near-duplicates (perceptual hash within
``PHASH_DISTANCE`` bits; a near-duplicate pair with different labels drops both). Kept files are
written as they are to ``$FAKESPOT_CACHE/wild/<sha256>.<ext>`` (``train.wild_data.IMAGES``) (a rule's ``crop_bottom`` crops and stores PNG).
A snapshot is a bare git directory, as the session's ``fetch`` leaves it: ``MIRRORS/owner+name/repo``.
A source whose repo is ``debian:PACKAGE`` is that Debian package at version ``commit``, downloaded with
``apt-get download`` and unpacked with ``dpkg -x`` under ``--debs``; its "blob" ids are git blob ids of the
unpacked files. A rule with ``"carve": "webp"`` cuts the RIFF/WEBP images out of a container file (a Qt
resource bundle): the row's path is ``CONTAINER@OFFSET+LENGTH`` and its blob is the container's.
A rule with ``"cut": "gutters"`` cuts a figure (a grid of pictures on black, captions above or below
them) into its tiles: one row per tile, path ``FIGURE@X,Y,W,H``, stored as PNG (see ``gutter_tiles``);
its optional ``row_generators`` name the generator of each grid row, top to bottom.
Every source also names its ``group``: the origin group left out together in cross-validation.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import functools
import hashlib
import io
import json
import os
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from tqdm import tqdm

from detector.stats import jpeg_quality
from train.wild_data import IMAGES, MANIFEST, ROOT, SOURCES, stored_ext

RESERVED = ROOT.parent / "shared" / "data" / "reserved_sha256.txt"
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MIN_SIDE = 128
PHASH_DISTANCE = 4
# Cutting figures on their gutters: a pixel at or under BACKGROUND grey is the black figure background;
# a line of a tile is mostly (INK) brighter; TILE_INSET px are left off every side of a tile, so JPEG
# ringing at the tile's edge and any black line never reach the kept image.
BACKGROUND, INK, TILE_INSET = 12, 0.5, 4
COLUMNS = ["sha256", "label", "generator", "source", "repo", "commit", "licence", "path", "blob", "format",
           "width", "height", "bytes", "jpeg_quality", "phash", "note"]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mirrors", default="/work/.mirror", help="folder of fetched snapshots (owner+name/repo)")
    p.add_argument("--sources", default=str(SOURCES))
    p.add_argument("--manifest", default=str(MANIFEST))
    p.add_argument("--out", default=str(IMAGES))
    p.add_argument("--reserved", default=str(RESERVED))
    p.add_argument("--debs", default="/tmp/wild_debs", help="where Debian packages are downloaded and unpacked")
    p.add_argument("--rebuild", action="store_true", help="re-extract the manifest's files and check their hashes")
    return p


def read_reserved(path: str | os.PathLike) -> set[str]:
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"{p} is missing: the reserved-image list must be checked before any image is kept")
    return {line.split()[0].lower() for line in p.read_text().splitlines() if line.strip() and not line.startswith("#")}


class Snapshot:
    """A bare git directory read through one ``git cat-file --batch`` process."""

    def __init__(self, mirrors: str, repo: str) -> None:
        self.git = Path(mirrors) / repo.replace("/", "+") / "repo"
        if not self.git.exists():
            raise SystemExit(f"no snapshot of {repo} at {self.git}: fetch github:{repo} first")
        self._cat = subprocess.Popen(["git", "--git-dir", str(self.git), "cat-file", "--batch"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def run(self, *args: str, check: bool = True) -> str:
        return subprocess.run(["git", "--git-dir", str(self.git), *args], check=check, capture_output=True,
                              text=True, errors="replace").stdout

    def files(self, commit: str, history: bool) -> list[tuple[str, str]]:
        """(path, blob) at ``commit``, plus every historical blob with its path when ``history``."""
        out = []
        for line in self.run("ls-tree", "-r", commit).splitlines():
            meta, path = line.split("\t", 1)
            if meta.split()[1] == "blob":
                out.append((path, meta.split()[2]))
        if history:
            seen = {b for _, b in out}
            for line in self.run("rev-list", "--objects", "--all", "--missing=allow-any", check=False).splitlines():
                parts = line.split(" ", 1)
                if len(parts) == 2 and parts[0] not in seen and parts[1].lower().endswith(IMAGE_EXT):
                    out.append((parts[1], parts[0]))
                    seen.add(parts[0])
        return out

    def blob(self, sha: str) -> bytes:
        self._cat.stdin.write(sha.encode() + b"\n")
        self._cat.stdin.flush()
        header = self._cat.stdout.readline().split()
        if len(header) < 3 or header[1] != b"blob":
            raise KeyError(f"{sha} is not a blob in {self.git}")
        data = self._cat.stdout.read(int(header[2]))
        self._cat.stdout.read(1)  # the newline after the content
        return data

    def close(self) -> None:
        self._cat.stdin.close()
        self._cat.wait()


def git_blob_id(data: bytes) -> str:
    """The id git gives a blob with these bytes (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class DebianPackage:
    """An unpacked Debian package read like a snapshot: ``repo`` is ``debian:NAME``, ``commit`` its version."""

    def __init__(self, debs: str, repo: str, version: str) -> None:
        name = repo.split(":", 1)[1]
        self.root = Path(debs) / f"{name}_{version.replace(':', '%3a')}"
        if not self.root.exists():
            Path(debs).mkdir(parents=True, exist_ok=True)
            pattern = f"{name}_*{version.split(':')[-1]}_*.deb"
            if not any(Path(debs).glob(pattern)):
                subprocess.run(["apt-get", "download", f"{name}={version}"], cwd=debs, check=True, capture_output=True)
            subprocess.run(["dpkg", "-x", str(next(Path(debs).glob(pattern))), str(self.root)], check=True)
        self._by_blob: dict[str, Path] = {}

    def files(self, commit: str, history: bool) -> list[tuple[str, str]]:
        out = []
        for f in sorted(p for p in self.root.rglob("*") if p.is_file() and not p.is_symlink()):
            blob = git_blob_id(f.read_bytes())
            self._by_blob[blob] = f
            out.append((str(f.relative_to(self.root)), blob))
        return out

    def blob(self, sha: str) -> bytes:
        if not self._by_blob:
            self.files("", False)
        if sha not in self._by_blob:
            raise KeyError(f"{sha} is not a file of {self.root}")
        return self._by_blob[sha].read_bytes()

    def close(self) -> None:
        pass


def open_snapshot(args: argparse.Namespace, repo: str, commit: str) -> Snapshot | DebianPackage:
    """The snapshot a source (or a manifest row) names: a git mirror or an unpacked Debian package."""
    if repo.startswith("debian:"):
        return DebianPackage(args.debs, repo, commit)
    return Snapshot(args.mirrors, repo)


def carve_webp(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every RIFF/WEBP image stored whole inside ``data``."""
    found, i = [], data.find(b"RIFF")
    while i >= 0:
        if data[i + 8:i + 12] == b"WEBP":
            n = int.from_bytes(data[i + 4:i + 8], "little") + 8
            if i + n <= len(data):
                found.append((i, n))
                i = data.find(b"RIFF", i + n)
                continue
        i = data.find(b"RIFF", i + 4)
    return found


def _runs(mask: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """(start, end) of every run of True at least ``min_len`` long."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return [(int(a), int(b)) for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)) if b - a >= min_len]


def _consensus(spans_per_line: list[list[tuple[int, int]]]) -> list[tuple[int, int]]:
    """Group spans measured along parallel lines (one list per line) into bands of overlapping spans;
    a band's edges are the most common start and end, so a picture that is dark at its edge in one
    line does not move the edge the others agree on."""
    bands: list[list[tuple[int, int]]] = []
    for a, b in sorted(sp for spans in spans_per_line for sp in spans):
        if bands and a < max(e for _, e in bands[-1]):
            bands[-1].append((a, b))
        else:
            bands.append([(a, b)])
    return [(Counter(a for a, _ in band).most_common(1)[0][0], Counter(b for _, b in band).most_common(1)[0][0])
            for band in bands]


def gutter_tiles(img: Image.Image, min_side: int = MIN_SIDE) -> tuple[list[tuple[int, int, int, int, int]], int]:
    """The pictures of a figure laid out as a grid on black: ([(x, y, w, h, grid_row)], cells rejected).

    Columns are the runs of non-black pixels over the rows that are mostly picture (caption text never
    is); rows are then found per column and columns per row, each edge by consensus. Caption lines are
    far shorter than ``min_side``, so they never form a tile. A grid's tiles share one size: a cell whose
    size differs by more than 2 px from the figure's common size (at least two tiles agreeing on it) was
    not cut cleanly and is rejected. Tiles are inset by ``TILE_INSET`` px.
    """
    ink = np.asarray(img.convert("L")) > BACKGROUND
    picture_rows = ink.mean(1) > INK
    if not picture_rows.any():
        return [], 0
    rough = _runs(ink[picture_rows].mean(0) > 0.1, min_side)
    rows = _consensus([_runs(ink[:, a:b].mean(1) > INK, min_side) for a, b in rough])
    cols = _consensus([_runs(ink[a:b].mean(0) > 0.1, min_side) for a, b in rows])
    cells = [(x0, y0, x1 - x0, y1 - y0, r) for r, (y0, y1) in enumerate(rows) for x0, x1 in cols
             if ink[y0:y1, x0:x1].mean() > 0.05]  # an empty cell of an incomplete last row is black
    if not cells:
        return [], 0
    (w0, nw), = Counter(c[2] for c in cells).most_common(1)
    (h0, nh), = Counter(c[3] for c in cells).most_common(1)
    if len(cells) > 1 and min(nw, nh) < 2:
        return [], len(cells)
    kept = [(x + TILE_INSET, y + TILE_INSET, w - 2 * TILE_INSET, h - 2 * TILE_INSET, r)
            for x, y, w, h, r in cells if abs(w - w0) <= 2 and abs(h - h0) <= 2]
    return kept, len(cells) - len(kept)


def tile_box(path: str) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of a tile path ``FIGURE@X,Y,W,H``; None for any other path."""
    spec = path.rsplit("@", 1)[1] if "@" in path else ""
    return tuple(int(v) for v in spec.split(",")) if spec.count(",") == 3 else None


def read_member(snap: Snapshot | DebianPackage, path: str, blob: str) -> bytes:
    """A file's bytes by blob id; for a carved path ``CONTAINER@OFFSET+LENGTH``, that slice of the container
    (a tile path ``FIGURE@X,Y,W,H`` gives the whole figure: ``decode`` cuts the tile)."""
    data = snap.blob(blob)
    spec = path.rsplit("@", 1)[1] if "@" in path else ""
    if "+" in spec:
        off, n = spec.split("+")
        data = data[int(off):int(off) + int(n)]
    return data


def candidates(source: dict, snap: Snapshot | DebianPackage, st: Counter | None = None) -> list[dict]:
    """Files the source's rules pick: {path, blob, label, generator, crop_bottom, min_side}.

    Files a rule's ``exclude`` leaves out (workflow screenshots, masks, inputs, ...) and figure cells that
    were not cut cleanly are counted in ``st``.
    """
    st = Counter() if st is None else st
    picked = []
    history = any(r.get("history") for r in source["include"])
    files = snap.files(source["commit"], history)
    at_commit = set(snap.files(source["commit"], False)) if history else set(files)
    if source.get("metadata"):
        m = source["metadata"]
        by_name = {Path(p).name: (p, b) for p, b in files if p.startswith(m["dir"] + "/")}
        text = snap.blob(next(b for p, b in files if p == m["file"])).decode("utf-8", "replace")
        for row in csv.DictReader(io.StringIO(text)):
            if row[m["name_column"]] in by_name and row[m["label_column"]] in m["labels"]:
                path, blob = by_name[row[m["name_column"]]]
                label = m["labels"][row[m["label_column"]]]
                picked.append({"path": path, "blob": blob, "label": label,
                               "generator": "" if label == "real" else row[m["generator_column"]]})
    for rule in source["include"]:
        carve = rule.get("carve")
        for path, blob in files:
            if not fnmatch.fnmatch(path, rule["glob"]) or not (carve or path.lower().endswith(IMAGE_EXT)):
                continue
            if not rule.get("history") and (path, blob) not in at_commit:
                continue
            if any(fnmatch.fnmatch(path, x) for x in rule.get("exclude", [])):
                st[(rule["label"], rule.get("generator", ""), "skipped: excluded by rule")] += 1
                continue
            item = {"path": path, "blob": blob, "label": rule["label"], "generator": rule.get("generator", ""),
                    "crop_bottom": rule.get("crop_bottom", 0), "min_side": rule.get("min_side", MIN_SIDE)}
            if carve == "webp":
                picked += [{**item, "path": f"{path}@{off}+{n}"} for off, n in carve_webp(snap.blob(blob))]
            elif rule.get("cut") == "gutters":
                picked += cut_figure(item, snap.blob(blob), rule.get("row_generators"), st)
            elif rule.get("cut"):
                raise SystemExit(f"{source['name']}: unknown cut {rule['cut']!r}; valid: gutters")
            else:
                picked.append(item)
    return picked


def cut_figure(item: dict, data: bytes, row_generators: list[str] | None, st: Counter) -> list[dict]:
    """One candidate per tile of a figure (``gutter_tiles``), generator per grid row when given."""
    key = (item["label"], item["generator"])
    try:
        tiles, rejected = gutter_tiles(_open_figure(data), item["min_side"])
    except ValueError as e:
        st[(*key, f"skipped: figure {e}")] += 1
        return []
    if rejected:
        st[(*key, "skipped: figure cell not cut cleanly (size differs from the grid's)")] += rejected
    if row_generators and len({r for *_, r in tiles}) != len(row_generators):
        st[(*key, "skipped: figure whose grid rows do not match row_generators")] += len(tiles)
        return []
    return [{**item, "path": f"{item['path']}@{x},{y},{w},{h}",
             "generator": row_generators[r] if row_generators else item["generator"]} for x, y, w, h, r in tiles]


@functools.lru_cache(maxsize=1)
def _open_figure(data: bytes) -> Image.Image:
    """A decoded figure, kept while its tiles are cut one after another."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # noqa: BLE001 - any decoder failure is a skip reason
        raise ValueError(f"undecodable ({type(e).__name__})") from None
    return img


def decode(data: bytes, crop_bottom: int, box: tuple[int, int, int, int] | None = None) -> tuple[Image.Image, bytes, str]:
    """(image, bytes to store, note); raises ValueError with the reason a file is skipped.

    With ``box`` (x, y, w, h), ``data`` is a figure and the tile in ``box`` is cut out and stored as PNG.
    """
    if box:
        fig = _open_figure(data)
        x, y, w, h = box
        img = fig.convert("RGB").crop((x, y, x + w, y + h))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        img.format = fig.format
        return img, buf.getvalue(), "tile cut from a figure on its gutters (box in the path), stored as PNG"
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # noqa: BLE001 - any decoder failure is a skip reason
        raise ValueError(f"undecodable ({type(e).__name__})") from None
    if getattr(img, "n_frames", 1) > 1:
        raise ValueError("animated")
    if crop_bottom:
        w, h = img.size
        fmt = img.format
        img = img.convert("RGB").crop((0, 0, w, h - crop_bottom))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        img.format = fmt
        return img, buf.getvalue(), f"cropped bottom {crop_bottom} px (signature bar or caption), stored as PNG"
    return img, data, ""


def scan(args: argparse.Namespace) -> None:
    """Pick, decode, filter and deduplicate every source's files; write the kept ones and the manifest."""
    t0 = time.time()
    sources = json.loads(Path(args.sources).read_text())
    reserved = read_reserved(args.reserved)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict | None] = []
    seen_sha: set[str] = set()
    hashes = np.zeros(0, np.uint64)  # the kept images' perceptual hashes, row i at index i
    # Per source: (label, generator, reason) -> count.
    stats: dict[str, Counter] = defaultdict(Counter)
    # Test sources first, then val, then train: a near-duplicate across splits keeps the held-out copy.
    order = {"test": 0, "val": 1, "train": 2}
    for source in sorted(sources, key=lambda s: order.get(s.get("split"), 3)):
        snap = open_snapshot(args, source["repo"], source["commit"])
        st = stats[source["name"]]
        for c in tqdm(candidates(source, snap, st), desc=source["name"], mininterval=5, leave=False):
            key = (c["label"], c["generator"])
            try:
                data = read_member(snap, c["path"], c["blob"])
            except KeyError:
                st[(*key, "skipped: not in the snapshot (files of 4 MiB and more are left out)")] += 1
                continue
            sha_raw = hashlib.sha256(data).hexdigest()
            if sha_raw in reserved:
                st[(*key, "dropped: reserved")] += 1
                continue
            box = tile_box(c["path"])
            if box:
                sha_raw = ""  # the figure's hash: shared by its tiles, so it says nothing of duplicates
            try:
                img, stored, note = decode(data, c.get("crop_bottom", 0), box)
            except ValueError as e:
                st[(*key, f"skipped: {e}")] += 1
                continue
            w, h = img.size
            if min(w, h) < c.get("min_side", MIN_SIDE):
                st[(*key, f"skipped: under {c.get('min_side', MIN_SIDE)} px")] += 1
                continue
            sha = hashlib.sha256(stored).hexdigest()
            if sha in reserved:
                st[(*key, "dropped: reserved")] += 1
                continue
            if sha in seen_sha or sha_raw in seen_sha:
                st[(*key, "dropped: exact duplicate")] += 1
                continue
            ph = imagehash.phash(img.convert("RGB"))
            bits = np.uint64(int(str(ph), 16))
            near = np.flatnonzero(np.bitwise_count(hashes ^ bits) <= PHASH_DISTANCE)
            if len(near):
                other = rows[near[0]]
                if other is not None and other["label"] != c["label"]:
                    rows[near[0]] = None  # conflicting labels: drop both
                    st[(*key, "dropped: near-duplicate of the other label (both dropped)")] += 1
                    stats[other["source"]][(other["label"], other["generator"],
                                            "dropped: near-duplicate of the other label (both dropped)")] += 1
                else:
                    st[(*key, "dropped: near-duplicate")] += 1
                continue
            seen_sha.update({sha, sha_raw} - {""})
            path = out / f"{sha}{stored_ext(c['path'], note)}"
            if not path.exists():
                tmp = path.with_suffix(path.suffix + ".tmp")
                tmp.write_bytes(stored)
                os.replace(tmp, path)
            hashes = np.append(hashes, bits)
            rows.append({"sha256": sha, "label": c["label"], "generator": c["generator"], "source": source["name"],
                         "repo": source["repo"], "commit": source["commit"], "licence": source["licence"],
                         "path": c["path"], "blob": c["blob"], "format": img.format or "", "width": w, "height": h,
                         "bytes": len(stored), "jpeg_quality": jpeg_quality(Image.open(io.BytesIO(data))) or "",
                         "phash": str(ph), "note": note})
        snap.close()
    kept = [r for r in rows if r is not None]
    for r in kept:  # the reserved check once more, on what is written
        assert r["sha256"] not in reserved
    write_manifest(args.manifest, kept)
    report(kept, stats)
    print(f"\n{len(kept)} images kept in {time.time() - t0:.0f} s; manifest {args.manifest}")


def write_manifest(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write the manifest CSV atomically (a temporary file, then os.replace)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(sorted(rows, key=lambda r: (r["source"], r["label"], r["path"])))
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def report(rows: list[dict], stats: dict[str, Counter]) -> None:
    """Print kept and dropped counts per source x label x generator, and the confounds per label."""
    kept = Counter((r["source"], r["label"], r["generator"]) for r in rows)
    print("\nper source x label x generator (kept; dropped or skipped by reason):")
    print(f"  {'source':30s} {'label':5s} {'generator':22s} {'kept':>5s}  dropped/skipped")
    for name, st in stats.items():
        groups = sorted({k[:2] for k in st} | {k[1:] for k in kept if k[0] == name})
        for label, gen in groups:
            why = ", ".join(f"{r.split(': ', 1)[1]} {n}" for (lb, g, r), n in sorted(st.items())
                            if (lb, g) == (label, gen))
            print(f"  {name:30s} {label:5s} {gen or '-':22s} {kept[(name, label, gen)]:5d}  {why}")
    print("\nper label and generator:")
    for (label, gen), n in sorted(Counter((r["label"], r["generator"]) for r in rows).items()):
        print(f"  {label:5s} {gen or '-':22s} {n}")
    print("\nconfounds per label (format, size, JPEG quality):")
    for label in ("real", "fake"):
        sel = [r for r in rows if r["label"] == label]
        if not sel:
            continue
        fmts = Counter(r["format"] for r in sel).most_common()
        ws, hs = np.array([int(r["width"]) for r in sel]), np.array([int(r["height"]) for r in sel])
        short = np.minimum(ws, hs)
        q = [int(r["jpeg_quality"]) for r in sel if r["jpeg_quality"] != ""]
        qs = Counter(min(x // 5 * 5, 95) for x in q)
        print(f"  {label}: {len(sel)} images from {len({r['source'] for r in sel})} sources")
        print(f"    formats: {dict(fmts)}")
        print(f"    median size {int(np.median(ws))}x{int(np.median(hs))}; short side quartiles "
              f"{np.percentile(short, [25, 50, 75]).astype(int).tolist()}; square {np.mean(ws == hs):.0%}; "
              f"short side >= 1024: {np.mean(short >= 1024):.0%}")
        if q:
            print(f"    JPEG quality (n={len(q)}): median {np.median(q):.0f}, quartiles "
                  f"{np.percentile(q, [25, 75]).astype(int).tolist()}; by bin "
                  + ", ".join(f"{b}{'+' if b == 95 else f'-{b + 4}'}: {qs[b]}" for b in sorted(qs)))
        notes = Counter(r["note"].split(" (")[0] for r in sel if r["note"])
        if notes:
            print(f"    transformed: {dict(notes)}")


def rebuild(args: argparse.Namespace) -> None:
    """Re-extract every manifest row from its snapshot by blob id, and check its SHA-256."""
    t0 = time.time()
    reserved = read_reserved(args.reserved)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(args.manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    snaps: dict[tuple[str, str], Snapshot | DebianPackage] = {}
    bad = 0
    for r in tqdm(rows, desc="rebuild", mininterval=5):
        if r["sha256"] in reserved:
            raise SystemExit(f"manifest row {r['path']} is a reserved image")
        key = (r["repo"], r["commit"])
        snap = snaps.get(key) or snaps.setdefault(key, open_snapshot(args, r["repo"], r["commit"]))
        data = read_member(snap, r["path"], r["blob"])
        crop = int(r["note"].split("cropped bottom ")[1].split()[0]) if r["note"].startswith("cropped bottom") else 0
        box = tile_box(r["path"])
        _, stored, _ = decode(data, crop, box) if crop or box else (None, data, "")
        if hashlib.sha256(stored).hexdigest() != r["sha256"]:
            bad += 1
            print(f"hash mismatch: {r['repo']}:{r['path']}")
            continue
        path = out / f"{r['sha256']}{stored_ext(r['path'], r['note'])}"
        if not path.exists():
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(stored)
            os.replace(tmp, path)
    for s in snaps.values():
        s.close()
    print(f"rebuilt {len(rows) - bad} of {len(rows)} images into {out} in {time.time() - t0:.0f} s; {bad} mismatches")
    if bad:
        raise SystemExit(1)


def main(args: argparse.Namespace) -> None:
    rebuild(args) if args.rebuild else scan(args)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
