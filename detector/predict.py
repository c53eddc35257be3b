"""The prediction API: ``detector.load(name_or_path).predict(images) -> P(fake)``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, resolve
from .engine import predict_logits, sigmoid
from .preprocess import CLASSES, ImageError, ImageSource, load_image, to_batch

log = logging.getLogger(__name__)

CHECKPOINT_DIR = Path(os.environ.get("DETECTOR_CHECKPOINTS", Path(__file__).resolve().parent.parent / "checkpoints"))
DEFAULT_MODEL = "fakespot"
HUB_REPO_ENV = "DETECTOR_HUB_REPO"  # e.g. "our-org/fakespot-cifake": fetch checkpoints from the Hugging Face Hub


def shipped_models(directory: str | os.PathLike = CHECKPOINT_DIR) -> list[str]:
    """Names of the checkpoints in ``directory`` (default first)."""
    names = sorted(p.stem for p in Path(directory).glob("*.json") if p.with_suffix(".safetensors").exists())
    return sorted(names, key=lambda n: n != DEFAULT_MODEL)


def fetch_from_hub(name: str, repo_id: str, revision: str | None = None) -> Path:
    """Download ``NAME.json`` and ``NAME.safetensors`` from a Hub model repository; returns the local stem."""
    from huggingface_hub import hf_hub_download

    record = hf_hub_download(repo_id, f"{name}.json", revision=revision)
    hf_hub_download(repo_id, f"{name}.safetensors", revision=revision)
    return Path(record).with_suffix("")


def resolve_model(name_or_path: str | os.PathLike | None = None, notes: list[str] | None = None) -> Path:
    """A shipped model's name (fetched from the Hub when DETECTOR_HUB_REPO is set), or a checkpoint path.

    A failed Hub download falls back to the local checkpoint; the reason is logged and, when ``notes``
    is given, appended to it (the app shows it).
    """
    name = str(name_or_path or DEFAULT_MODEL)
    wpath, rpath = resolve(name)
    if rpath.exists() or wpath.exists() or os.sep in name or name.endswith((".json", ".safetensors")):
        return rpath.with_suffix("")
    repo = os.environ.get(HUB_REPO_ENV)
    if repo:
        try:
            return fetch_from_hub(name, repo)
        except Exception as e:  # offline, missing file, auth: fall back to the local copy, loudly
            msg = f"could not fetch {name!r} from the Hub repository {repo} ({type(e).__name__}: {e}); using the local checkpoint"
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


def load(name_or_path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
         notes: list[str] | None = None) -> Predictor:
    """Load a shipped model by name (``cnn``, ``resnet50``, ``fakespot``) or a checkpoint path."""
    stem = resolve_model(name_or_path, notes)
    model, record = load_checkpoint(stem, map_location=str(device))
    return Predictor(model, record, device, name=Path(stem).name)
