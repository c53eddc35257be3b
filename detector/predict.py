"""The prediction API: ``detector.load(name_or_path).predict(images) -> P(fake)``."""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, resolve
from .engine import predict_logits, sigmoid
from .preprocess import CLASSES, ImageError, ImageSource, load_image, open_image, orientation, to_batch

log = logging.getLogger(__name__)

CHECKPOINT_DIR = Path(os.environ.get("DETECTOR_CHECKPOINTS", Path(__file__).resolve().parent.parent / "checkpoints"))
AUTO = "auto"  # pick the track by the input (see choose_track)
DEFAULT_MODEL = AUTO
CIFAKE_MODEL = "fakespot"  # the CIFAKE track's default: 32x32 images
WILD_MODEL = "wild"  # the wild track's default: photos and renders at their own size
CIFAKE_MAX_SIDE = 64  # images at most this large on their longest side go to the CIFAKE track
HUB_REPO_ENV = "DETECTOR_HUB_REPO"  # e.g. "our-org/fakespot": fetch checkpoints from the Hugging Face Hub
HUB_REVISION_ENV = "DETECTOR_HUB_REVISION"  # the commit of that repository to use (pinned); default "main"


def shipped_models(directory: str | os.PathLike = CHECKPOINT_DIR) -> list[str]:
    """Names of the detectors in ``directory``, the track defaults first (backbones are not detectors)."""
    names = [p.stem for p in sorted(Path(directory).glob("*.json"))
             if p.with_suffix(".safetensors").exists() and not is_backbone(p)]
    return sorted(names, key=lambda n: (n not in (WILD_MODEL, CIFAKE_MODEL), n != WILD_MODEL, n))


def is_backbone(record_path: str | os.PathLike) -> bool:
    """Whether a record describes a backbone (features for a head, no P(fake) of its own)."""
    try:
        return json.loads(Path(record_path).read_text(encoding="utf-8")).get("kind") == "backbone"
    except (OSError, ValueError):
        return False  # a damaged record is listed; loading it gives the reason


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


def hub_settings() -> tuple[str | None, str]:
    """(repository, revision) of the Hub model repository the checkpoints come from, if one is set.

    ``DETECTOR_HUB_REVISION`` should be a commit hash: records and weights then come from one fixed
    snapshot. Unset, the moving ``main`` is used (and the app says so).
    """
    return os.environ.get(HUB_REPO_ENV) or None, os.environ.get(HUB_REVISION_ENV) or "main"


@functools.lru_cache(maxsize=8)
def hub_snapshot(repo_id: str, revision: str = "main") -> Path:
    """Every record and weight file of a Hub model repository at one revision, downloaded together
    (``snapshot_download``: one revision for all files, so a record is never paired with other weights).
    Returns the local folder; failures are not cached, so a later call tries again."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.md"]))


def checkpoint_dir(notes: list[str] | None = None) -> Path:
    """Where the checkpoints come from: the Hub snapshot when ``DETECTOR_HUB_REPO`` is set and it can
    be downloaded, otherwise the local ``checkpoints/`` (the reason is logged and added to ``notes``)."""
    repo, revision = hub_settings()
    if not repo:
        return CHECKPOINT_DIR
    try:
        return hub_snapshot(repo, revision)
    except Exception as e:  # offline, missing repository or revision, auth: fall back, loudly
        msg = (f"could not download the Hub repository {repo} at revision {revision} ({type(e).__name__}: {e}); "
               "using the local checkpoints")
        log.warning(msg)
        if notes is not None and msg not in notes:
            notes.append(msg)
        return CHECKPOINT_DIR


def resolve_model(name_or_path: str | os.PathLike | None = None, notes: list[str] | None = None) -> Path:
    """A shipped model's name (from the Hub snapshot when DETECTOR_HUB_REPO is set), or a checkpoint path.

    A failed Hub download, or a snapshot without the model, falls back to the local checkpoint; the
    reason is logged and, when ``notes`` is given, appended to it (the app shows it).
    """
    name = str(name_or_path or CIFAKE_MODEL)
    wpath, rpath = resolve(name)
    if rpath.exists() or wpath.exists() or os.sep in name or name.endswith((".json", ".safetensors")):
        return rpath.with_suffix("")
    folder = checkpoint_dir(notes)
    if folder != CHECKPOINT_DIR:
        if (folder / f"{name}.json").exists():
            return folder / name
        repo, revision = hub_settings()
        msg = (f"the Hub repository {repo} at revision {revision} has no model {name!r} (it offers: "
               f"{', '.join(shipped_models(folder)) or 'none'}); using the local checkpoint")
        log.warning(msg)
        if notes is not None:
            notes.append(msg)
    local = CHECKPOINT_DIR / name
    if not local.with_suffix(".json").exists():
        available = ", ".join(shipped_models()) or "none found"
        raise CheckpointError(f"unknown model {name!r}: not a checkpoint path, and no {name}.json in "
                              f"{CHECKPOINT_DIR} (shipped models: {available})")
    return local


class Predictor:
    """A loaded model with its own preprocessing, threshold and temperature, all from its record."""

    def __init__(self, model: nn.Module, record: dict, device: str | torch.device = "cpu", name: str = "") -> None:
        self.model = model.to(device).eval()
        self.record = record
        self.device = torch.device(device)
        self.name = name or record.get("name") or record["arch"]
        self.input_size = int(record["input_size"])
        self.mean, self.std = tuple(record["mean"]), tuple(record["std"])
        self.threshold = float(record.get("threshold", 0.5))
        self.temperature = float(record.get("temperature", 1.0))
        if list(record.get("classes", CLASSES)) != list(CLASSES):
            raise CheckpointError(f"checkpoint classes {record.get('classes')} are not {list(CLASSES)}")

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

    def predict_arrays(self, arrays: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """P(fake) for (N, size, size, 3) uint8 arrays already at the model's input size."""
        return sigmoid(self.logits(arrays, batch_size), self.temperature)

    def predict(self, images: ImageSource | Sequence[ImageSource]) -> float | np.ndarray:
        """P(fake) for one image (a float) or a batch (an array): PIL images, arrays, paths or bytes."""
        p = self.predict_arrays(self.preprocess(images))
        return float(p[0]) if _is_single(images) else p

    def label(self, p_fake: float) -> str:
        return CLASSES[int(p_fake >= self.threshold)]


def _is_single(images) -> bool:
    if isinstance(images, np.ndarray):
        return images.ndim in (2, 3)
    return not isinstance(images, (list, tuple))


def _as_list(images) -> list:
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return list(images)
    return [images] if _is_single(images) else list(images)


class AutoPredictor:
    """Two tracks behind one ``predict``: each image goes to the model :func:`choose_track` picks.

    Models load on first use. ``judge`` returns, per image, P(fake) with the model that judged it and why.
    """

    name = AUTO

    def __init__(self, device: str | torch.device = "cpu", notes: list[str] | None = None,
                 loaded: dict[str, "Predictor"] | None = None) -> None:
        self.device, self.notes = device, notes
        self.predictors: dict[str, Predictor] = dict(loaded or {})

    def model(self, name: str) -> "Predictor":
        if name not in self.predictors:
            self.predictors[name] = load(name, self.device, self.notes)
        return self.predictors[name]

    def route(self, src: ImageSource) -> tuple[str, str]:
        return choose_track(image_size(src))

    def judge(self, images: ImageSource | Sequence[ImageSource]) -> dict | list[dict]:
        """``{"p_fake", "label", "model", "reason"}`` per image (one dict for one image)."""
        out = []
        for src in _as_list(images):
            name, reason = self.route(src)
            pred = self.model(name)
            p = pred.predict(src)
            out.append({"p_fake": p, "label": pred.label(p), "model": pred.name, "reason": reason})
        return out[0] if _is_single(images) else out

    def predict(self, images: ImageSource | Sequence[ImageSource]) -> float | np.ndarray:
        j = self.judge(images)
        return j["p_fake"] if isinstance(j, dict) else np.array([x["p_fake"] for x in j])


def pick(predictor: "Predictor | AutoPredictor", src: ImageSource) -> tuple["Predictor", str]:
    """The model that judges ``src`` and why: the track's default under ``auto``, else the one chosen."""
    if isinstance(predictor, AutoPredictor):
        name, reason = predictor.route(src)
        return predictor.model(name), reason
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
         notes: list[str] | None = None) -> "Predictor | AutoPredictor":
    """Load a model by name (``wild``, ``fakespot``, ``cnn``, ``resnet50``) or checkpoint path; with no name
    (or ``auto``), a predictor that picks the track per image (:func:`choose_track`)."""
    if name_or_path is None or str(name_or_path) == AUTO:
        return AutoPredictor(device, notes)
    stem = resolve_model(name_or_path, notes)
    model, record = load_checkpoint(stem, map_location=str(device))
    return Predictor(model, record, device, name=Path(stem).name)
