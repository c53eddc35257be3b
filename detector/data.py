"""Reading image sets: labelled (REAL/ and FAKE/ folders at any depth, in a folder or a zip) and unlabelled.

Every image is decoded once through :func:`detector.preprocess.load_image`, so a dataset of any
size is seen exactly as the CLI and the app would see it. Files are also hashed (SHA-256 of their
bytes): the hashes find byte-identical duplicates and fingerprint the training data.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from .preprocess import INPUT_SIZE, ImageError, load_image

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
LABEL_DIRS = {"real": 0, "fake": 1}
ACCEPTED_NAMES = ", ".join(sorted(IMAGE_EXTENSIONS)) + " and .zip"
# Limits on what one input may unpack to (zip-bomb guards). Zips are read in memory, never extracted.
MAX_FILE_BYTES = 256 * 1024 * 1024  # one image file
MAX_MEMBER_BYTES = 64 * 1024 * 1024  # one zip member, as declared in the zip directory
MAX_COMPRESSION_RATIO = 100  # JPEG and PNG barely compress; a bomb compresses thousands to one
# What reading a damaged zip entry can raise (zipfile passes its decompressors' errors through).
_ENTRY_ERRORS = (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError, EOFError, ValueError, zlib.error)


@dataclass
class UnpackBudget:
    """What one call of ``iter_sources`` may unpack from zips, shared by every zip it names and every level of
    nesting, so a zip of zips cannot start each level with a fresh allowance. Sizes are those the zip
    directories declare, checked before anything is inflated (zipfile never inflates past them), so a bomb
    is refused from its directory, in milliseconds. ``for_uploads`` is the web app's, per Batch request."""

    max_bytes: int = 4 * 1024 ** 3  # uncompressed bytes, all zips and levels together
    max_entries: int = 2_000_000  # zip entries looked at (images, nested zips and refused ones alike)
    max_depth: int = 3  # a zip in a zip in a zip
    bytes_used: int = 0
    entries_used: int = 0
    exhausted: bool = False  # once a zip is refused for the budget, no later zip is opened

    @classmethod
    def for_uploads(cls) -> UnpackBudget:
        return cls(max_bytes=512 * 1024 ** 2, max_entries=2_000, max_depth=3)

    def refuse(self, n_entries: int, n_bytes: int) -> str | None:
        """Why a zip listing ``n_entries`` wanted entries declaring ``n_bytes`` in all cannot be read, or None."""
        if self.entries_used + n_entries > self.max_entries:
            why = (f"lists at least {n_entries:,} entries, and one request may look at {self.max_entries:,} in all zips "
                   f"together ({self.entries_used:,} already)")
        elif self.bytes_used + n_bytes > self.max_bytes:
            why = (f"unpacks to at least {n_bytes:,} bytes, and one request may unpack {self.max_bytes:,} in all zips "
                   f"together ({self.bytes_used:,} already)")
        else:
            return None
        self.exhausted = True
        return f"refused: this zip {why}; it and any zip after it were not read (split the upload into smaller zips)"


@dataclass
class ImageSet:
    """Decoded images with their labels (0 real, 1 fake, -1 unknown), source paths and byte hashes."""

    images: np.ndarray  # (N, S, S, 3) uint8, S = the size they were decoded to
    labels: np.ndarray  # (N,) int64
    paths: list[str]
    hashes: list[str]
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of skipped files

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx) -> ImageSet:
        idx = np.asarray(idx, dtype=np.int64)
        return ImageSet(self.images[idx], self.labels[idx], [self.paths[i] for i in idx],
                        [self.hashes[i] for i in idx], list(self.errors))

    def fingerprint(self) -> str:
        """SHA-256 over the sorted (path, file hash, label) triples: names the exact data used."""
        h = hashlib.sha256()
        for p, d, y in sorted(zip(self.paths, self.hashes, self.labels.tolist())):
            h.update(f"{p}\t{d}\t{y}\n".encode())
        return h.hexdigest()

    def counts(self) -> dict[str, int]:
        return {"real": int((self.labels == 0).sum()), "fake": int((self.labels == 1).sum())}


def label_from_path(path: str) -> int:
    """1 for a file under a FAKE/ folder, 0 under REAL/, -1 otherwise (the innermost one wins)."""
    for part in reversed(PurePosixPath(path.replace("\\", "/")).parts[:-1]):
        label = LABEL_DIRS.get(part.lower())
        if label is not None:
            return label
    return -1


_CONTROL = {c: f"\\x{c:02x}" for c in range(32)}


def printable(name: str) -> str:
    """A path as one line of valid UTF-8: bytes that are not UTF-8 (a Linux file name may hold any)
    and control characters (newlines in a zip member's name) become \\xNN."""
    try:
        text = os.fsencode(name).decode("utf-8", "backslashreplace")
    except (UnicodeError, TypeError):
        text = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.translate(_CONTROL)


def is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_EXTENSIONS


def iter_sources(paths: list[str | os.PathLike], budget: UnpackBudget | None = None
                 ) -> Iterator[tuple[str, bytes | None, str | None]]:
    """Yield ``(display_path, data, error)`` for every image file under the given files, folders and zips.

    Folders are searched recursively; zips are read in memory, never extracted, so a member named
    ``../../x.png`` touches nothing on disk (an entry is shown as ``ZIP:INNER``; a zip inside a zip as
    ``ZIP:INNER.zip:NAME``, up to ``budget.max_depth`` levels). What all zips together may unpack is one
    ``budget`` (default: ``UnpackBudget()``). Exactly one of ``data`` and ``error`` is set. Hidden files and
    non-image names inside folders and zips are skipped; a file named directly is always tried, and a
    folder named directly that holds no image is reported.
    """
    budget = budget or UnpackBudget()
    for src in paths:
        p = Path(src)
        if p.is_dir():
            found = False
            for f in folder_images(p):
                found = True
                yield _read_file(f)
            if not found:
                yield str(src), None, f"folder holds no image files (searched recursively; accepted: {ACCEPTED_NAMES})"
        elif p.is_file() and not is_image_name(p.name) and zipfile.is_zipfile(p):
            if budget.exhausted:
                yield str(src), None, "not read: an earlier zip in this request was refused (see its line)"
            else:
                yield from _iter_zip(p, str(p), 1, budget)
        elif p.exists():
            yield _read_file(p)
        else:
            yield str(src), None, "no such file or folder"


def count_images(paths: list[str | os.PathLike]) -> int:
    """About how many items ``iter_sources`` will yield (cheap: zip directories are read, not their data)."""
    n = 0
    for src in paths:
        p = Path(src)
        if p.is_dir():
            n += sum(1 for _ in folder_images(p))
        elif p.is_file() and not is_image_name(p.name) and zipfile.is_zipfile(p):
            try:
                with _open_zip(p) as zf:
                    n += sum(1 for i in zf.infolist() if not i.is_dir() and _zip_wanted(i.filename))
            except (zipfile.BadZipFile, OSError, ValueError):
                n += 1
        else:
            n += 1
    return n


def folder_images(folder: Path) -> Iterator[Path]:
    """Image files under ``folder``, recursively and sorted; hidden files are skipped."""
    return (f for f in sorted(folder.rglob("*")) if f.is_file() and is_image_name(f.name) and not f.name.startswith("."))


def _read_file(f: Path) -> tuple[str, bytes | None, str | None]:
    try:
        size = f.stat().st_size
        if size > MAX_FILE_BYTES:
            return str(f), None, f"file too large ({size:,} bytes; the limit is {MAX_FILE_BYTES:,})"
        return str(f), f.read_bytes(), None
    except OSError as e:
        return str(f), None, f"cannot read file ({e.strerror or e})"


def _zip_wanted(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and (is_image_name(name) or base.lower().endswith(".zip"))


_UTF8_FLAG = 0x800  # general-purpose bit 11: the entry's name is UTF-8


def _open_zip(src: Path | io.BytesIO) -> zipfile.ZipFile:
    """``zipfile.ZipFile``, also for a zip whose entries are flagged UTF-8 but whose names are not: zipfile
    raises UnicodeDecodeError on those, losing the whole zip for one name. Then the flag is cleared in
    every central and local header of an in-memory copy, zipfile reads the names as cp437 (which maps
    every byte), and ``_entry_name`` turns them back into UTF-8 with the bad bytes replaced."""
    try:
        return zipfile.ZipFile(src)
    except UnicodeDecodeError:
        pass
    data = bytearray(src.getvalue() if isinstance(src, io.BytesIO) else Path(src).read_bytes())
    end = data.rfind(b"PK\x05\x06")  # end of central directory
    if end < 0 or end + 22 > len(data):
        raise zipfile.BadZipFile("no end of central directory")
    count, _, start = struct.unpack_from("<HII", data, end + 10)
    pos = start
    for _ in range(count):
        if data[pos:pos + 4] != b"PK\x01\x02":
            raise zipfile.BadZipFile("bad central directory entry")
        flags, = struct.unpack_from("<H", data, pos + 8)
        n, m, k = struct.unpack_from("<HHH", data, pos + 28)
        local, = struct.unpack_from("<I", data, pos + 42)
        struct.pack_into("<H", data, pos + 8, flags & ~_UTF8_FLAG)
        if data[local:local + 4] == b"PK\x03\x04":
            lflags, = struct.unpack_from("<H", data, local + 6)
            struct.pack_into("<H", data, local + 6, lflags & ~_UTF8_FLAG)
        pos += 46 + n + m + k
    zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    zf.names_recoded = True
    return zf


def _entry_name(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    if getattr(zf, "names_recoded", False):
        return info.filename.encode("cp437").decode("utf-8", "replace")
    return info.filename


def _member_refusal(info: zipfile.ZipInfo, nested: bool, depth: int, max_depth: int) -> str | None:
    """Why one zip entry is not read, from the zip directory alone, or None."""
    ratio = info.file_size / max(info.compress_size, 1)
    if info.flag_bits & 0x1:
        return "encrypted zip entry (not supported; unzip it with its password first)"
    if info.file_size > MAX_MEMBER_BYTES:
        return f"zip entry too large ({info.file_size:,} bytes; the limit is {MAX_MEMBER_BYTES:,})"
    if ratio > MAX_COMPRESSION_RATIO and (nested or info.file_size > 1_000_000):
        # Images barely compress, and nor does a zip of images; a bomb compresses thousands to one.
        return f"refused: compressed {ratio:,.0f} to 1, which images never are (zip bomb?)"
    if nested and depth >= max_depth:
        return f"zip nested more than {max_depth} deep (not searched)"
    return None


def _wanted(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    return [i for i in zf.infolist() if not i.is_dir() and _zip_wanted(_entry_name(zf, i))]


def _survey(zf: zipfile.ZipFile, depth: int, budget: UnpackBudget, entries: int = 0, size: int = 0
            ) -> tuple[int, int]:
    """Entries and bytes a zip unpacks to, the zips inside it included: their directories are read, which
    inflates only the nested zips themselves, never an image. Stops as soon as the budget is overrun, so a
    zip of zips of zips (the 42.zip shape, a few KB that unpack to terabytes) costs milliseconds."""
    for info in _wanted(zf):
        entries, size = entries + 1, size + info.file_size
        if budget.entries_used + entries > budget.max_entries or budget.bytes_used + size > budget.max_bytes:
            break
        if not is_image_name(_entry_name(zf, info)) and _member_refusal(info, True, depth, budget.max_depth) is None:
            try:
                with _open_zip(io.BytesIO(zf.read(info))) as inner:
                    entries, size = _survey(inner, depth + 1, budget, entries, size)
            except (*_ENTRY_ERRORS, struct.error):
                pass  # reported with its reason when the zip is read
    return entries, size


def _iter_zip(src: Path | io.BytesIO, shown_as: str, depth: int, budget: UnpackBudget
              ) -> Iterator[tuple[str, bytes | None, str | None]]:
    """Members of one zip (recursing into zips inside it), within ``budget``; every refusal is one line
    with its reason. A zip named by the caller is surveyed first, nested zips and all (``_survey``): one
    that would overrun the budget is refused whole before any image in it is inflated."""
    try:
        zf = _open_zip(src)
    except (zipfile.BadZipFile, OSError, ValueError, struct.error) as e:
        yield shown_as, None, f"cannot open zip ({e})"
        return
    with zf:
        if budget.exhausted:
            return
        wanted = _wanted(zf)
        why = budget.refuse(*_survey(zf, depth, budget)) if depth == 1 else None  # nested: within the survey
        if why:
            yield shown_as, None, why
            return
        for info in wanted:
            if budget.exhausted:
                return
            name = _entry_name(zf, info)
            shown = f"{shown_as}:{name}"
            nested = not is_image_name(name)
            why = _member_refusal(info, nested, depth, budget.max_depth) or budget.refuse(1, info.file_size)
            budget.entries_used += 1
            if why:
                yield (shown_as if budget.exhausted else shown), None, why
                continue
            budget.bytes_used += info.file_size
            try:
                data = zf.read(info)
            except _ENTRY_ERRORS as e:
                yield shown, None, f"cannot read zip entry ({e})"
                continue
            if nested:
                yield from _iter_zip(io.BytesIO(data), shown, depth + 1, budget)
            else:
                yield shown, data, None


def load_image_set(paths: str | os.PathLike | list, labelled: bool = True, size: int = INPUT_SIZE,
                   progress: bool = True) -> ImageSet:
    """Decode every image under ``paths`` (files, folders, zips) to the model's input.

    With ``labelled=True`` each file must sit under a REAL/ or FAKE/ folder (at any depth) and files
    that do not are an error; unreadable files are skipped and listed in ``errors``.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    images, labels, names, hashes, errors = [], [], [], [], []
    for name, data, err in tqdm(iter_sources(paths), desc="decoding", unit="img", disable=not progress,
                                mininterval=1.0):
        # A zip entry is shown as ZIP:INNER; label from INNER, or 'x.zip:FAKE/a.png' hides the FAKE folder.
        label = label_from_path(name.rsplit(":", 1)[-1] if ":" in name else name)
        if labelled and label < 0:
            continue
        if err is None:
            try:
                images.append(load_image(data, size))
            except ImageError as e:
                err = str(e)
        if err is not None:
            errors.append((name, err))
            continue
        labels.append(label)
        names.append(name)
        hashes.append(hashlib.sha256(data).hexdigest())
    if labelled and not names:
        raise ValueError(f"no labelled images found in {', '.join(map(str, paths))}: expected image files "
                         "under folders named REAL/ and FAKE/ (at any depth), in a folder or a zip")
    arr = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return ImageSet(arr, np.asarray(labels, dtype=np.int64), names, hashes, errors)
