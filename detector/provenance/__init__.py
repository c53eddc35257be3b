"""Evidence beyond the classifier: Content Credentials (C2PA), metadata, generation parameters and
invisible watermarks, read from the file a user uploads.

``gather(src)`` returns an :class:`Evidence`: structured findings, each with its strength and what it
does and does not prove, plus notes on what was skipped and why. It never raises on a hostile file:
every reader runs inside a size, time and error bound, and a failure becomes a note.

Strengths, strongest first: ``verified`` (a C2PA signature that chains to the trust list over these
pixels), ``declared`` (what metadata says) and ``heuristic`` (a statistical signal); see
:mod:`detector.provenance.evidence`.

No finding is blended into P(fake): the classifier's answer stays beside the evidence.

One module per source of evidence, over the shared model in ``evidence``:

- ``evidence``: :class:`Finding`, :class:`Evidence`, the strengths, source types, limits, and :func:`leads`;
- ``c2pa``: Content Credentials (trust anchors, validation, ``c2pa_finding``);
- ``metadata``: EXIF, XMP, IPTC and PNG text;
- ``parameters``: generation parameters (A1111, ComfyUI, ``png_generation``...);
- ``watermark``: the invisible-watermark check (``binomial_tail``).

This module is the entry point (``gather``, ``submit``, ``result``, ``gather_within``) and re-exports the
public names, so ``provenance.X`` keeps working. A test that patches a reader must patch the module that
reads the name (e.g. ``detector.provenance.metadata._exif``), not this one.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from pathlib import Path

from .c2pa import (CREDENTIAL_FAILURES, PIXEL_HASH_FAILURES, TRUST_ENV, c2pa_finding, read_c2pa, trust_anchors,
                   trust_description)
from .evidence import (AI_CLAIMS, lazy_pool, C2PA_TIMEOUT_S, EVIDENCE_TIMEOUT_S, IPTC_SOURCE, LIMITS, MAX_BYTES,
                       MAX_SETTINGS_LINE, MAX_TEXT_VALUE, MAX_XMP_BYTES, SOURCE_TYPES, STRENGTHS, TIMEOUT_ENV,
                       Evidence, Finding, _timeout_from_env, leads)
from .metadata import AI_SOFTWARE, CAMERA_EXIF, RDF_RESOURCE, WROTE_IT, XMP_KEYS, read_metadata
from .parameters import parse_a1111, parse_comfyui, png_generation
from .watermark import (WATERMARK_BLOCK, WATERMARK_BLOCKS, WATERMARK_CHANCE, WATERMARK_PIXELS, WATERMARK_SCALES,
                        WATERMARKS, binomial_tail)

__all__ = [
    "gather", "submit", "result", "gather_within",
    "Finding", "Evidence", "leads", "STRENGTHS", "SOURCE_TYPES", "AI_CLAIMS", "IPTC_SOURCE", "LIMITS", "MAX_BYTES",
    "MAX_XMP_BYTES", "MAX_TEXT_VALUE", "MAX_SETTINGS_LINE", "TIMEOUT_ENV", "C2PA_TIMEOUT_S", "EVIDENCE_TIMEOUT_S",
    "_timeout_from_env",
    "TRUST_ENV", "PIXEL_HASH_FAILURES", "CREDENTIAL_FAILURES", "trust_anchors", "trust_description", "read_c2pa",
    "c2pa_finding",
    "AI_SOFTWARE", "CAMERA_EXIF", "RDF_RESOURCE", "XMP_KEYS", "WROTE_IT", "read_metadata",
    "parse_a1111", "parse_comfyui", "png_generation",
    "WATERMARKS", "WATERMARK_PIXELS", "WATERMARK_BLOCKS", "WATERMARK_BLOCK", "WATERMARK_SCALES", "WATERMARK_CHANCE",
    "binomial_tail",
]


def gather(src: str | os.PathLike | bytes, c2pa_timeout: float = C2PA_TIMEOUT_S,
           trust_pem: str | None = None, watermarks: bool = True) -> Evidence:
    """Every piece of provenance evidence in one image file (a path or its bytes). Never raises for
    what the file holds; unreadable parts become notes."""
    t0 = time.perf_counter()
    ev = Evidence(trust=trust_description(trust_pem))
    try:
        data = _read(src)
    except OSError as e:
        ev.notes.append(f"file could not be read for evidence ({e})")
        return _done(ev, t0)
    if data is None:
        ev.notes.append(f"file larger than {MAX_BYTES // 2**20} MB: no evidence read")
        return _done(ev, t0)
    for reader in (lambda: read_c2pa(data, ev, c2pa_timeout, trust_pem), lambda: read_metadata(data, ev, watermarks)):
        try:
            reader()
        except Exception as e:  # noqa: BLE001 (a reader bug or a library surprise must not cost the verdict)
            ev.notes.append(f"evidence reader failed ({type(e).__name__}: {e}); the rest is shown")
    return _done(ev, t0)


_pool = lazy_pool("evidence")  # the evidence workers (four threads), made on first use


def submit(src: str | os.PathLike | bytes) -> concurrent.futures.Future:
    """Start :func:`gather` in a worker thread (the app reads the evidence while its model runs)."""
    return _pool().submit(gather, src)


def result(future: concurrent.futures.Future, timeout: float = EVIDENCE_TIMEOUT_S) -> Evidence:
    """The evidence of a :func:`submit`, or, past ``timeout`` seconds, an empty one that says so: a file that
    makes a reader slow costs its evidence, never the verdict."""
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        return Evidence(notes=[f"evidence not read: it took longer than {timeout:g} s"], trust=trust_description(),
                        seconds=timeout)


def gather_within(src: str | os.PathLike | bytes, timeout: float = EVIDENCE_TIMEOUT_S) -> Evidence:
    """:func:`gather` with a bound on the wait (the CLI and the Batch tab)."""
    return result(submit(src), timeout)


def _done(ev: Evidence, t0: float) -> Evidence:
    ev.seconds = time.perf_counter() - t0
    return ev


def _read(src) -> bytes | None:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src) if len(src) <= MAX_BYTES else None
    if os.path.getsize(src) > MAX_BYTES:
        return None
    return Path(src).read_bytes()
