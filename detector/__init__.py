"""Tell real photographs from AI-generated images. Every model speaks one number: P(fake).

Two tracks: ``wild`` (CLIP ViT-B/16 with a head, for photos and renders at their own size) and the CIFAKE
models (``fakespot``, ``cnn``, ``resnet50``: 32x32 thumbnails). ``load()`` with no name routes each image by
its size (``predict.AutoPredictor``)."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .models import create_model, list_models
from .predict import DEFAULT_MODEL, Predictor, load, shipped_models
from .preprocess import CLASSES, ImageError, load_image

__all__ = [
    "CLASSES", "DEFAULT_MODEL", "CheckpointError", "ImageError", "Predictor",
    "create_model", "list_models", "load", "load_checkpoint", "load_image", "save_checkpoint", "shipped_models",
]
