"""The prediction API: ``detector.load(name_or_path).predict(images) -> P(fake)``."""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint
from .engine import predict_logits, sigmoid
from .hub import (CHECKPOINT_DIR, CIFAKE_MODEL, HUB_REPO_ENV, HUB_REVISION_ENV, WILD_MODEL,  # noqa: F401 (re-exported)
                  checkpoint_dir, hub_settings, hub_snapshot, is_backbone, resolve_model, shipped_models)
from .preprocess import CLASSES, ImageError, ImageSource, load_image, load_rgb, open_image, orientation, to_batch
from .record import Record
from .residual import ResidualNet, image_logit

log = logging.getLogger(__name__)

AUTO = "auto"  # pick the track by the input (see choose_track)
DEFAULT_MODEL = AUTO
CIFAKE_MAX_SIDE = 64  # images at most this large on their longest side go to the CIFAKE track
# A "real" verdict is worded as a finding only when the model caught at least this share of the AI images in
# its held-out test; below it, "real" means no sign of generation was found, which is all it supports.
STRONG_RECALL = 0.90

# The words of every verdict, in one place: the page, Batch, the API, the MCP tools and the CLI all read them.
VERDICT_WORDS = {
    "fake": "Likely AI-generated",
    "uncertain": "Uncertain: too close to the threshold to call",
    "real": "Likely a real photograph",
    "real_weak": "No sign of AI generation found",
}


@dataclass(frozen=True)
class Verdict:
    """What one P(fake) means for one model, decided once (:meth:`Predictor.verdict`) and shown alike everywhere."""

    key: str  # "real", "uncertain" or "fake": the verdict, with the uncertain band
    label: str  # "real" or "fake": the class by the threshold alone (an uncertain verdict still leans one way)
    p_fake: float
    threshold: float
    band: tuple[float, float]  # P(fake) in [lo, hi) is uncertain
    headline: str  # the words for people (VERDICT_WORDS)
    caveat: str  # what the model's measured figures say about this verdict ("" when nothing needs saying)

    def to_dict(self) -> dict:
        return {"verdict": self.key, "label": self.label, "headline": self.headline, "caveat": self.caveat,
                "threshold": self.threshold, "uncertain_band": [round(v, 4) for v in self.band]}


def choose_track(size: tuple[int, int]) -> tuple[str, str]:
    """The default model for an image of ``size`` (width, height), and why, in words a user can read.

    The CIFAKE models only know 32x32 thumbnails and are at chance on full-size images; the wild model
    needs more pixels than a thumbnail holds. So tiny images go to the CIFAKE track, the rest to the wild one.
    """
    w, h = size
    if max(w, h) <= CIFAKE_MAX_SIDE:
        return CIFAKE_MODEL, (f"{w}x{h} is CIFAKE-sized (at most {CIFAKE_MAX_SIDE} px a side), so the CIFAKE track "
                              f"(`{CIFAKE_MODEL}`, trained on 32x32 images) judged it")
    return WILD_MODEL, (f"{w}x{h} is larger than a CIFAKE thumbnail, so the wild track (`{WILD_MODEL}`, CLIP ViT-B/16 "
                        "trained on real-world photographs and AI images) judged it")


class Predictor:
    """A loaded model with its own preprocessing, threshold and temperature, all from its record."""

    def __init__(self, model: nn.Module, record: Record, device: str | torch.device = "cpu", name: str = "",
                 notes: list[str] | None = None, source: str | os.PathLike | None = None) -> None:
        """``source``: the checkpoint the model came from (a float32 copy is reloaded from it when the
        backbone runs in int8, see :meth:`float32_model`)."""
        self.model = model.to(device).eval()
        self.record = record
        self.source = source
        self.device = torch.device(device)
        self.name = name or record.display_name
        self.input_size = int(record.input_size)
        self.mean, self.std = tuple(record.mean), tuple(record.std)
        self.threshold = float(record.threshold)
        self.temperature = float(record.temperature)
        self.band = record.band()
        if list(record.classes) != list(CLASSES):
            raise CheckpointError(f"checkpoint classes {record.classes} are not {list(CLASSES)}")
        # A second, low-level signal (detector.residual) fused with this model's logit, when the record names one.
        self.residual: ResidualNet | None = None
        self.fusion: dict | None = record.fusion
        if self.fusion:
            stem = resolve_model(self.fusion["residual"], notes)
            self.residual = load_checkpoint(stem)[0].to(self.device).eval()

    def fuse(self, logits: np.ndarray, residual: np.ndarray | None) -> np.ndarray:
        """P(fake) from this model's logits and, for a fused model, the residual network's: with ``residual``
        None (a tile, or a model without a second signal) the first signal alone, by its temperature."""
        if residual is None or not self.fusion:
            return sigmoid(logits, self.temperature)
        w = self.fusion
        return sigmoid(w["weights"][0] * np.asarray(logits, np.float64) + w["weights"][1] * np.asarray(residual) + w["bias"])

    def residual_logits(self, images: list) -> np.ndarray | None:
        """The residual network's logit of each decoded RGB image (PIL) at its own resolution; None without one."""
        if self.residual is None:
            return None
        return np.array([image_logit(self.residual, img)[0] for img in images], np.float32)

    def preprocess(self, images: ImageSource | Sequence[ImageSource]) -> np.ndarray:
        """Inputs -> (N, size, size, 3) uint8 model inputs. Raises ImageError naming the bad input."""
        items = _as_list(images)
        out = []
        for i, src in enumerate(items):
            try:
                out.append(load_image(src, self.input_size))
            except ImageError as e:
                where = os.fspath(src) if isinstance(src, (str, os.PathLike)) else f"input {i}"
                raise ImageError(f"{where}: {e}") from None
        return np.stack(out) if out else np.zeros((0, self.input_size, self.input_size, 3), np.uint8)

    def logits(self, arrays: np.ndarray, batch_size: int = 512) -> np.ndarray:
        return predict_logits(self.model, to_batch(arrays), self.device, batch_size, self.mean, self.std)

    def predict_arrays(self, arrays: np.ndarray, batch_size: int = 512, residual: np.ndarray | None = None) -> np.ndarray:
        """P(fake) for (N, size, size, 3) uint8 arrays already at the model's input size; a fused model also
        takes the residual logits of the same images (``residual_logits``), else it gives its first signal alone."""
        return self.fuse(self.logits(arrays, batch_size), residual)

    def predict(self, images: ImageSource | Sequence[ImageSource]) -> float | np.ndarray:
        """P(fake) for one image (a float) or a batch (an array): PIL images, arrays, paths or bytes."""
        residual = None
        if self.residual is not None:
            residual = self.residual_logits([load_rgb(rewound(src)) for src in _as_list(images)])
            images = [rewound(src) for src in _as_list(images)] if not _is_single(images) else rewound(images)
        p = self.predict_arrays(self.preprocess(images), residual=residual)
        return float(p[0]) if _is_single(images) else p

    def label(self, p_fake: float) -> str:
        return CLASSES[int(p_fake >= self.threshold)]

    @property
    def precision(self) -> str:
        """The backbone's arithmetic: ``int8`` (ONNX Runtime) or ``float32`` (and float32 for models without one)."""
        return getattr(getattr(self.model, "backbone", None), "precision", "float32")

    def float32_model(self) -> nn.Module:
        """A float32 copy of the model for what needs gradients (Grad-CAM): a float32 model is copied, an
        int8 backbone (no gradients in ONNX Runtime) is reloaded in float32 from :attr:`source`."""
        if self.precision == "float32":
            return copy.deepcopy(self.model).float()
        if self.source is None:
            raise ValueError(f"{self.name}: an int8 model without its checkpoint path cannot be explained; "
                             "load it with detector.load(), or load it in float32")
        return load_checkpoint(self.source, str(self.device), precision="float32")[0]

    def verdict(self, p_fake: float) -> Verdict:
        """The verdict on a score: the class by the threshold, "uncertain" inside the record's band, and words
        that claim no more than the model's held-out figures support (its record's ``metrics["test"]``)."""
        p = float(p_fake)
        lo, hi = self.band
        key = "uncertain" if lo <= p < hi else self.label(p)
        test = self.record.metrics.get("test", {})
        recall, real_acc = test.get("fake_accuracy"), test.get("real_accuracy")
        words, caveat = VERDICT_WORDS[key], ""
        if key == "real" and recall is not None and recall < STRONG_RECALL:
            words = VERDICT_WORDS["real_weak"]
            caveat = (f"On images from sources it never saw, this model caught {recall:.0%} of the AI images at its "
                      "threshold: many AI images get this verdict too.")
        elif key == "fake" and real_acc is not None and real_acc < STRONG_RECALL:
            caveat = f"On images from sources it never saw, it wrongly flagged {1 - real_acc:.0%} of real photos."
        elif key == "uncertain":
            caveat = (f"P(fake) {p:.2f} is in the uncertain band {lo:.2f}-{hi:.2f} around the threshold {self.threshold:.2f}: "
                      "treat it as a coin toss.")
        return Verdict(key, self.label(p), p, self.threshold, self.band, words, caveat)


def rewound(src):
    """A file object back at its start (it is read twice by a fused model); anything else as it is."""
    if hasattr(src, "seek"):
        src.seek(0)
    return src


def _is_single(images) -> bool:
    if isinstance(images, np.ndarray):
        return images.ndim in (2, 3)
    return not isinstance(images, (list, tuple))


def _as_list(images) -> list:
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images] if _is_single(images) else list(images)


class AutoPredictor:
    """The one place that decides which model judges an image: ``auto`` sends each image to the model
    :func:`choose_track` picks for its size; a model chosen by name judges every image.

    Models load on first use, or come ``loaded`` (the app loads every shipped model once). When a track's
    default cannot be had, its images go to ``fallback`` (a loaded model) and the reason says so.
    ``pick`` answers with the predictor and the reason a user reads; ``explainer`` gives its Grad-CAM
    explainer, made once per model.
    """

    name = AUTO

    def __init__(self, device: str | torch.device = "cpu", notes: list[str] | None = None,
                 loaded: dict[str, "Predictor"] | None = None, fallback: str | None = None,
                 load_missing: bool = True, precision: str | None = None) -> None:
        self.device, self.notes, self.precision = device, notes, precision
        self.predictors: dict[str, Predictor] = dict(loaded or {})
        self.fallback, self.load_missing = fallback, load_missing
        self._explainers: dict[str, object] = {}

    def model(self, name: str) -> "Predictor":
        if name not in self.predictors:
            if not self.load_missing:
                raise CheckpointError(f"model {name!r} is not loaded")
            self.predictors[name] = load(name, self.device, self.notes, self.precision)
        return self.predictors[name]

    def route(self, src: ImageSource) -> tuple[str, str]:
        return choose_track(image_size(src))

    def pick(self, src: ImageSource | None = None, name: str | None = None) -> tuple["Predictor", str]:
        """The model that judges ``src`` and why. ``name`` (a shipped model) overrides the routing; with
        neither a name nor an image (an API caller that has not sent one yet) the wild track is meant."""
        if name and name != AUTO:
            return self.model(name), f"`{name}` was chosen by hand"
        track, reason = self.route(src) if src is not None else (WILD_MODEL, "the wild track is the default for files")
        try:
            return self.model(track), reason
        except (CheckpointError, OSError, ValueError) as e:
            if self.fallback is None or self.fallback == track:
                raise
            log.warning("track default %s unavailable (%s); using %s", track, e, self.fallback)
            return self.model(self.fallback), f"{reason}; `{track}` is not loaded, so `{self.fallback}` judged it instead"

    def explainer(self, predictor: "Predictor"):
        """The Grad-CAM explainer of a model, made once (it holds hooks and a copy-free view of the model)."""
        from .explain import Explainer

        if predictor.name not in self._explainers:
            self._explainers[predictor.name] = Explainer(predictor)
        return self._explainers[predictor.name]

    def judge(self, images: ImageSource | Sequence[ImageSource]) -> dict | list[dict]:
        """``{"p_fake", "verdict", "label", "headline", ..., "model", "reason"}`` per image (one dict for one image)."""
        out = []
        for src in _as_list(images):
            pred, reason = self.pick(src)
            p = pred.predict(src)
            out.append({"p_fake": p, **pred.verdict(p).to_dict(), "model": pred.name, "reason": reason})
        return out[0] if _is_single(images) else out

    def predict(self, images: ImageSource | Sequence[ImageSource]) -> float | np.ndarray:
        j = self.judge(images)
        return j["p_fake"] if isinstance(j, dict) else np.array([x["p_fake"] for x in j])


def pick(predictor: "Predictor | AutoPredictor", src: ImageSource) -> tuple["Predictor", str]:
    """The model that judges ``src`` and why: the router's choice under ``auto``, else the one chosen."""
    if isinstance(predictor, AutoPredictor):
        return predictor.pick(src)
    return predictor, f"`{predictor.name}` was chosen by hand"


def image_size(src: ImageSource) -> tuple[int, int]:
    """(width, height) as the user sees it (EXIF rotation applied), from the header alone."""
    if isinstance(src, np.ndarray):
        a = src if src.ndim != 3 or src.shape[-1] in (1, 3, 4) else np.moveaxis(src, 0, -1)
        return int(a.shape[1]), int(a.shape[0])
    img = open_image(src)
    w, h = img.size
    if hasattr(src, "seek"):
        src.seek(0)
    return (h, w) if orientation(img) in (5, 6, 7, 8) else (w, h)


def load(name_or_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
         notes: list[str] | None = None, precision: str | None = None) -> "Predictor | AutoPredictor":
    """Load a model by name (``wild``, ``fakespot``, ``cnn``, ``resnet50``) or checkpoint path; with no name
    (or ``auto``), a predictor that picks the track per image (:func:`choose_track`).

    ``precision`` (``float32`` or ``int8``) chooses the wild backbone's arithmetic over the record's
    ``backbone_precision`` and ``DETECTOR_BACKBONE_PRECISION``; models without a backbone ignore it."""
    if name_or_path is None or str(name_or_path) == AUTO:
        return AutoPredictor(device, notes, precision=precision)
    stem = resolve_model(name_or_path, notes)
    model, record = load_checkpoint(stem, map_location=str(device), precision=precision)
    return Predictor(model, record, device, name=Path(stem).name, notes=notes, source=stem)
