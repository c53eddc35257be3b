"""One image, fully analysed: verdict, Grad-CAM maps, background share and image statistics.

The web app and the benchmarks call this; it holds no UI. ``analyse`` is the whole server-side work of
one request in the app's Analyse tab, and ``batch_rows`` is the Batch tab's per-file work.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps

from . import provenance
from .data import UnpackBudget, iter_sources, printable
from .engine import sigmoid
from .explain import Explainer, background_share, object_mask, tile_map
from .predict import AutoPredictor, Predictor, Verdict, image_size, pick, rewound
from .preprocess import (ImageError, ImageSource, draft_within, load_image, load_rgb, open_image, orientation, shrink,
                         to_rgb)
from .residual import CROP, image_logit
from .stats import image_stats, jpeg_quality

LARGE_FACTOR = 2  # an upload more than this many times the input size (per side) gets a plain warning
DISPLAY_SIZE = 512  # longest side of the original shown back to the user
TILES = 4  # native-resolution tiles in the wild track's tile map (each costs one backbone pass)


@dataclass
class Analysis:
    model: str
    p_fake: float
    judgement: Verdict  # the verdict, its band and its words: Predictor.verdict, the one place that decides
    size: tuple[int, int]  # the upload's (width, height), after EXIF rotation
    format: str | None
    jpeg_quality: int | None
    model_input: np.ndarray  # (S, S, 3) uint8, S = the model's input_size: what the model sees
    display: np.ndarray  # the upload as RGB, at most DISPLAY_SIZE on its longest side
    reason: str = ""  # why this model judged the image (the track choice, or the user's)
    wild: bool = False  # the model is the wild track's (its record's track): real-world images at any size
    method: str = ""
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)  # class -> (S, S) map in [0, 1]
    foreground: np.ndarray | None = None  # (S, S) bool object mask
    background_share: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)
    tiles: list[dict] = field(default_factory=list)  # wild track: P(fake) of native-resolution tiles
    residual_tiles: list[dict] = field(default_factory=list)  # fused model: P(fake) of the residual network's crops
    evidence: provenance.Evidence | None = None  # C2PA, metadata, watermarks: beside P(fake), never blended in
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:  # real or fake, by the threshold
        return self.judgement.label

    @property
    def verdict(self) -> str:  # real, fake or uncertain
        return self.judgement.key

    @property
    def threshold(self) -> float:
        return self.judgement.threshold

    @property
    def large(self) -> bool:
        return max(self.size) > LARGE_FACTOR * self.model_input.shape[0]

    @property
    def background_area(self) -> float:
        """The background's share of the image area: what an evenly spread heatmap would score."""
        return float(1 - self.foreground.mean()) if self.foreground is not None else float("nan")

    def size_note(self) -> str:
        w, h = self.size
        s = self.model_input.shape[0]
        if self.wild:
            crop = "its centre square, " if w != h else ""
            tiles = (f" The tile map shows {len(self.tiles)} tiles of {s}x{s} pixels judged at the image's own "
                     "resolution, so you can see where it looks generated." if self.tiles else "")
            return (f"The image is {w}x{h} pixels; the model judged {crop}resized to {s}x{s} (what CLIP was trained "
                    f"on).{tiles}")
        if max(w, h) < s // 2:
            return (f"The image is only {w}x{h} pixels: it was enlarged to {s}x{s}, so the model sees almost nothing "
                    "and its verdict and maps carry little meaning.")
        if not self.large:
            return f"The image is {w}x{h}, close to the {s}x{s} images the model was trained on."
        crop = " centre-cropped to a square and" if w != h else ""
        return (f"The image is {w}x{h} pixels, far larger than the {s}x{s} images the model was trained on: "
                f"it was{crop} shrunk to {s}x{s}, and the model judges only that thumbnail. Fine detail is "
                "lost, so verdicts on large photos are much less reliable than on CIFAKE-style images.")

    def summary(self) -> dict:
        """The JSON form (what the API returns): numbers and names, no arrays."""
        out = {"p_fake": round(self.p_fake, 6), **self.judgement.to_dict(), "model": self.model, "reason": self.reason,
               "width": self.size[0], "height": self.size[1], "format": self.format,
               "jpeg_quality": self.jpeg_quality, "resized": self.large}
        if self.stats:
            out["stats"] = {k: round(v, 6) for k, v in self.stats.items()}
        if self.heatmaps:
            out["cam_method"] = self.method
            out["background_share"] = {k: (None if np.isnan(v) else round(v, 4))
                                       for k, v in self.background_share.items()}
            out["background_area"] = round(self.background_area, 4)
        if self.tiles:
            out["tiles"] = [{"box": list(t["box"]), "p_fake": round(t["p_fake"], 4)} for t in self.tiles]
        if self.residual_tiles:
            out["residual_tiles"] = [{"box": list(t["box"]), "p_fake": round(t["p_fake"], 4)} for t in self.residual_tiles]
        if self.evidence is not None:
            out["evidence"] = self.evidence.to_dict()
        return out


def _decode(src: ImageSource, input_size: int, keep_full: bool = False
            ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], str | None, int | None, Image.Image | None]:
    """Model input (by the shared policy), a display copy, the size, format, JPEG quality, and (when
    ``keep_full``) the whole image, EXIF-rotated, for the tile map: at its own resolution and in its own mode
    (tiles are converted to RGB one by one), or for a JPEG over ``MAX_DECODE_BYTES`` at the DCT scale that
    fits (``img.tile_scale`` says which). Memory stays within about twice that limit whatever the file."""
    model_input = load_image(src, input_size)
    if hasattr(src, "seek"):
        src.seek(0)
    img = open_image(src)
    fmt, quality = img.format, jpeg_quality(img)
    size = image_size(img)  # before a draft decode shrinks it; as people see it (EXIF rotation applied)
    full = None
    try:
        if keep_full:
            scale = draft_within(img)
            full = ImageOps.exif_transpose(img) if orientation(img) != 1 else img
            full.load()
            full.tile_scale = scale
            rgb = to_rgb(shrink(full, DISPLAY_SIZE))
        else:
            if fmt == "JPEG":
                img.draft("RGB", (DISPLAY_SIZE, DISPLAY_SIZE))  # only for display
            rgb = to_rgb(shrink(img, DISPLAY_SIZE))
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot decode image ({e})") from None
    if max(rgb.size) > DISPLAY_SIZE:  # a new image: ``rgb`` may be ``full`` itself, which the tile map still needs whole
        k = DISPLAY_SIZE / max(rgb.size)  # (Image.thumbnail would shrink it in place)
        rgb = rgb.resize((max(1, round(rgb.width * k)), max(1, round(rgb.height * k))), Image.Resampling.LANCZOS)
    return model_input, np.asarray(rgb), size, fmt, quality, full


def analyse(predictor: Predictor, src: ImageSource, explainer: Explainer | None = None, method: str = "GradCAM",
            with_stats: bool = True, reason: str = "", max_tiles: int = TILES, with_evidence: bool = True) -> Analysis:
    """Everything the app shows for one image. Without an explainer, no heatmaps (and no tile map) are computed.
    The provenance evidence (``detector.provenance``) needs the file itself: a path or bytes."""
    t = {"start": time.perf_counter()}
    # The evidence is mostly Python and file parsing, the model mostly PyTorch kernels that release the GIL:
    # read it in a worker thread while the model runs.
    evidence = (provenance.submit(src)
                if with_evidence and isinstance(src, (str, os.PathLike, bytes, bytearray, memoryview)) else None)
    tiles_wanted = explainer is not None and predictor.record.wild and max_tiles > 0
    model_input, display, size, fmt, quality, full = _decode(src, predictor.input_size, keep_full=tiles_wanted)
    t["decode"] = time.perf_counter()
    maps, residual, residual_tiles = {}, None, []
    if predictor.residual is not None:  # the low-level signal, on crops of the image at its own resolution
        native = full if full is not None else load_rgb(rewound(src))
        scale = getattr(native, "tile_scale", 1)
        logit, crop_logits, corners = image_logit(predictor.residual, native)
        residual = np.array([logit])
        residual_tiles = [{"box": tuple(v * scale for v in (x, y, x + CROP, y + CROP)), "p_fake": float(sigmoid(c))}
                          for c, (x, y) in zip(crop_logits, corners)]
        t["residual"] = time.perf_counter()
    if explainer is None:
        p = float(predictor.predict_arrays(model_input[None], residual=residual)[0])
        t["predict"] = time.perf_counter()
    else:  # the verdict comes from the explanation's own forward pass: the model runs once
        maps, logit = explainer.heatmaps_and_logit(model_input, method)
        if explainer.same_scores:
            p = float(predictor.fuse(np.array([logit]), residual)[0])
        else:  # the maps explain a float32 copy; the verdict stays the predictor's (int8)
            p = float(predictor.predict_arrays(model_input[None], residual=residual)[0])
        t["predict+cam"] = time.perf_counter()
    a = Analysis(model=predictor.name, p_fake=p, judgement=predictor.verdict(p), size=size, format=fmt, jpeg_quality=quality,
                 model_input=model_input, display=display, reason=reason, wild=predictor.record.wild,
                 residual_tiles=residual_tiles)
    if explainer is not None:
        a.method = method
        a.heatmaps = maps
        a.foreground = object_mask(model_input)
        a.background_share = {c: background_share(m, a.foreground) for c, m in a.heatmaps.items()}
        t["segment"] = time.perf_counter()
    if tiles_wanted and full is not None and max(size) >= 2 * predictor.input_size:
        a.tiles = tile_map(predictor, full, max_tiles)
        if full.tile_scale > 1:  # a JPEG too large to decode whole: tiles at 1/scale, boxes in full-size pixels
            for tile in a.tiles:
                tile["box"] = tuple(v * full.tile_scale for v in tile["box"])
                tile["scale"] = full.tile_scale
        t["tiles"] = time.perf_counter()
    if with_stats:
        a.stats = image_stats(model_input)
        t["stats"] = time.perf_counter()
    if evidence is not None:
        a.evidence = provenance.result(evidence)  # bounded: a slow file costs its evidence, not the verdict
        t["evidence (wait)"] = time.perf_counter()
    marks = list(t.items())
    a.seconds = {k: v - marks[i][1] for i, (k, v) in enumerate(marks[1:])}
    a.seconds["total"] = marks[-1][1] - marks[0][1]
    return a


def evidence_columns(ev: provenance.Evidence) -> dict:
    """The Batch tab's evidence columns (CSV-friendly) plus the full findings (JSON)."""
    d = ev.to_dict()
    return {"evidence": d["headline"] if d["strongest"] else "", "evidence_strength": d["strongest"] or "",
            "evidence_claim": d["claim"] or "", "evidence_findings": d["findings"], "evidence_notes": d["notes"]}


def _prepare(predictor: Predictor | AutoPredictor, name: str, data: bytes, with_evidence: bool
             ) -> tuple[Predictor, dict, np.ndarray]:
    """The per-file work of ``batch_rows`` (all but the model's batched forward pass): route, decode, the
    file's hash, size, JPEG quality, evidence and, for a fused model, the residual logit."""
    pred, reason = pick(predictor, data)
    array = load_image(data, pred.input_size)
    img = open_image(io.BytesIO(data))
    w, h = image_size(img)
    row = {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "model": pred.name, "reason": reason,
           "width": w, "height": h, "jpeg_quality": jpeg_quality(img)}
    if with_evidence:
        row.update(evidence_columns(provenance.gather_within(data)))
    if pred.residual is not None:  # popped when the chunk is judged
        row["_residual"] = float(pred.residual_logits([load_rgb(io.BytesIO(data))])[0])
    return pred, row, array


_WORKER: dict = {}  # what a decoder process needs, set before the pool forks (see batch_rows)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # each decoder is one core's worth; the parent runs the model


def _prepare_in_worker(item: tuple[str, bytes | None, str | None]) -> tuple[str, str | None, dict, np.ndarray | None]:
    """(model name, error, row, model input) of one file, in a decoder process."""
    name, data, err = item
    if err is None:
        try:
            pred, row, array = _prepare(_WORKER["predictor"], name, data, _WORKER["with_evidence"])
            return pred.name, None, row, array
        except ImageError as e:
            err = str(e)
    return "", err, {"file": name}, None


def _pooled(pool, items: Iterator, window: int) -> Iterator[tuple[str, str | None, dict, np.ndarray | None]]:
    """``_prepare_in_worker`` over ``items`` in the pool, in order, ``window`` files in flight at most (so a
    million files are never all read into memory at once)."""
    while batch := list(itertools.islice(items, window)):
        yield from pool.imap(_prepare_in_worker, batch, chunksize=2)


def batch_rows(predictor: Predictor | AutoPredictor, paths: Iterable[str | os.PathLike], names: dict[str, str] | None = None,
               chunk: int = 256, with_evidence: bool = True, budget: UnpackBudget | None = None,
               with_stats: bool = True, workers: int = 0, skip: set[str] | frozenset = frozenset()
               ) -> Iterator[tuple[list[dict], list[dict], int]]:
    """Judge every image under ``paths`` (files, folders, zips) in chunks: the one batch pipeline, which the
    Batch tab, the command line and the dataset scan only format.

    With an AutoPredictor each file goes to the model it picks (rows name the model and why). Yields
    ``(rows, errors, done)`` per chunk: rows are ``{"file", "sha256", "p_fake", "verdict", "label", "headline",
    "caveat", "threshold", "uncertain_band", "model", "reason", "width", "height", "jpeg_quality", stats...,
    evidence...}``, errors are ``{"file", "reason"}``, ``done`` counts the files handled so far (``skip``ped
    ones too). ``names`` maps a path to the name to show (the upload's original name rather than a temporary
    path). ``budget`` bounds what the zips among ``paths`` may unpack, all together (``data.UnpackBudget``).
    ``workers`` > 0 decodes in that many forked processes while this one runs the model; an AutoPredictor
    should then hold its models already (a worker's lazy load would stay in the worker). Files whose shown
    name is in ``skip`` are passed over (a resumed scan).
    """
    names = names or {}

    def shown(path: str) -> str:
        for real, nice in names.items():
            if path == real or path.startswith(real + ":"):
                return printable(nice + path[len(real):])
        return printable(path)

    done = 0

    def items() -> Iterator[tuple[str, bytes | None, str | None]]:
        nonlocal done
        for path, data, err in iter_sources(list(paths), budget):
            name = shown(path)
            done += 1
            if name not in skip:
                yield name, data, err

    chunks = judge_items(predictor, items(), chunk, with_evidence, with_stats, workers)
    for rows, errors in chunks:
        yield rows, errors, done


def judge_items(predictor: Predictor | AutoPredictor, items: Iterable[tuple[str, bytes | None, str | None]],
                chunk: int = 256, with_evidence: bool = True, with_stats: bool = True, workers: int = 0
                ) -> Iterator[tuple[list[dict], list[dict]]]:
    """The core of ``batch_rows`` on ``(name, data, error)`` items already read (a Ray actor's batch, or
    ``iter_sources``' files): ``(rows, errors)`` per chunk of at most ``chunk`` images."""
    rows, errors = [], []
    pending: dict[str, tuple[Predictor, list, list]] = {}  # model name -> (predictor, [row so far], arrays)
    models = {}

    def flush():
        for pred, partial, arrays in pending.values():
            if not arrays:
                continue
            residual = None if pred.residual is None else np.array([r.pop("_residual") for r in partial])
            for row, img, pi in zip(partial, arrays, pred.predict_arrays(np.stack(arrays), residual=residual)):
                row.update({"p_fake": round(float(pi), 6), **pred.verdict(float(pi)).to_dict()})
                if with_stats:
                    row.update({k: round(v, 6) for k, v in image_stats(img).items()})
                rows.append(row)
        pending.clear()

    def serial() -> Iterator[tuple[str, str | None, dict | None, np.ndarray | None]]:
        for name, data, err in items:
            if err is None:
                try:
                    pred, row, array = _prepare(predictor, name, data, with_evidence)
                    models[pred.name] = pred
                    yield pred.name, None, row, array
                    continue
                except ImageError as e:
                    err = str(e)
            yield "", err, {"file": name}, None

    if workers > 0:
        import multiprocessing

        _WORKER.update(predictor=predictor, with_evidence=with_evidence)
        models.update(predictor.predictors if isinstance(predictor, AutoPredictor) else {predictor.name: predictor})
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_worker_init)
        results = _pooled(pool, iter(items), window=workers * 32)
    else:
        results = serial()
    try:
        for model_name, err, row, array in results:
            if err is not None:
                errors.append({"file": row["file"], "reason": err})
            else:
                pred = models.get(model_name) or predictor.model(model_name)  # a model a worker loaded itself
                group = pending.setdefault(model_name, (pred, [], []))
                group[1].append(row)
                group[2].append(array)
            if sum(len(g[2]) for g in pending.values()) >= chunk or len(errors) >= chunk:
                flush()
                yield rows, errors
                rows, errors = [], []
        flush()
        yield rows, errors
    finally:
        if workers > 0:
            pool.terminate()
            _WORKER.clear()
