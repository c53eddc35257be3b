"""The record: what a checkpoint says about itself, as one typed object every writer and reader uses.

``NAME.json`` beside ``NAME.safetensors`` holds a ``Record``. Writers build one (an unknown field is a
``TypeError`` at once, not a key nobody reads); readers use its attributes; ``from_dict`` refuses a
record with a field this code does not know, naming it. Like nanoGPT's ``GPTConfig`` or timm's
``PretrainedCfg``: one place that lists every field, with what it means.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass, field
from typing import Any

from .preprocess import CLASSES, INPUT_SIZE, MEAN, STD

FORMAT = "fakespot-checkpoint/1"
UNCERTAIN_BAND = 0.15  # P(fake) within this of the threshold is "uncertain", unless the record names its own band
PARTS = ("backbone", "signal")  # kinds that are part of a detector, not one (features, a fused second signal)
TRACKS = ("cifake", "wild")


def library_versions() -> dict[str, str]:
    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}


@dataclass
class Record:
    """Everything needed to rebuild, use and judge a model; see the module docstring."""

    # -- what the model is
    arch: str  # name in detector.models.create_model: cnn, resnet50, fakespot, ensemble, wild, residual, clip_vit_b16
    arch_kwargs: dict = field(default_factory=dict)  # the keyword arguments create_model(arch, ...) takes
    name: str | None = None  # the shipped name (checkpoints/NAME); None -> arch
    kind: str = "detector"  # "detector" (gives P(fake)); a part of one: "backbone" (features), "signal" (fused)
    track: str = "cifake"  # "cifake": 32x32 thumbnails; "wild": real-world images at any size
    description: str | None = None  # one line for people
    backbone: dict | None = None  # {"name", "weights_sha256"} of a checkpoint beside this one, loaded as backbone.*
    backbone_precision: str | None = None  # "float32" or "int8" (detector/int8.py); None -> float32 (overridable)
    fusion: dict | None = None  # {"residual": checkpoint, "weights": [w_model, w_residual], "bias"}: a second signal
    crops: dict | None = None  # a crop-level signal's crops: {"crop", "grid", "jpeg_quality"}
    parameters: int | None = None  # trainable and frozen parameters, backbone included
    # -- how it reads an image
    input_size: int = INPUT_SIZE  # side in pixels of the square the model sees
    mean: list = field(default_factory=lambda: list(MEAN))  # per-channel normalisation, on [0, 1] pixels
    std: list = field(default_factory=lambda: list(STD))
    classes: list = field(default_factory=lambda: list(CLASSES))  # index 0 real, 1 fake; must equal CLASSES
    output: str = "one logit; sigmoid(logit / temperature) = P(fake)"
    # -- how its score becomes a verdict
    threshold: float = 0.5  # P(fake) at or above -> "fake"
    temperature: float = 1.0  # logit divisor fitted on held-out data (calibration)
    uncertain_band: float | list | None = None  # a margin either side of the threshold, or [low, high); None -> default
    threshold_rule: str | None = None  # in words, how the threshold was chosen
    calibration: dict | None = None  # the fit behind temperature and threshold (method, data, before/after)
    # -- how it was made
    train_args: dict = field(default_factory=dict)  # the trainer's arguments and recipe
    data: dict | None = None  # what it was trained on: counts per split, class, source
    data_fingerprint: str | None = None  # hash of the training data's identity, checked by --resume
    epoch: int | None = None  # the epoch these weights are from
    train_seconds: float | None = None  # wall-clock training time
    metrics: dict = field(default_factory=dict)  # held-out figures: "val", "test" (what verdict() words read), "cv", ...
    versions: dict | None = field(default_factory=library_versions)  # library versions that wrote it
    provenance: dict | None = None  # imported weights: upstream, source file hashes, licence, conversion
    verification: dict | None = None  # imported weights: the check against the upstream model's outputs
    # -- the weights file (written by save_checkpoint)
    weights_file: str | None = None
    weights_sha256: str | None = None  # refused at load when the file's hash differs
    weights_storage: str | None = None  # how tensors are stored: float32, float16 for large ones, int8 + scales
    format: str = FORMAT

    @property
    def display_name(self) -> str:
        return self.name or self.arch

    @property
    def wild(self) -> bool:
        """Trained for real-world images at any size (vs CIFAKE's 32x32 thumbnails)."""
        return self.track == "wild"

    @property
    def is_part(self) -> bool:
        return self.kind in PARTS

    def band(self) -> tuple[float, float]:
        """The uncertain band's [low, high) edges in P(fake)."""
        band = UNCERTAIN_BAND if self.uncertain_band is None else self.uncertain_band
        if isinstance(band, (list, tuple)):
            return float(band[0]), float(band[1])
        return max(0.0, self.threshold - float(band)), min(1.0, self.threshold + float(band))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every field, an unset one as null, so a record file shows the whole schema."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        """A record from its JSON form; ValueError on a field this code does not know or a missing ``arch``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown record field(s) {unknown}; known fields: {sorted(known)}")
        if "arch" not in d:
            raise ValueError("the record has no 'arch'")
        return cls(**{"versions": None, **d})  # a record read back never takes this process's versions

    def replace(self, **fields) -> Record:
        """A copy with ``fields`` changed (TypeError on a field that does not exist)."""
        return dataclasses.replace(self, **fields)
