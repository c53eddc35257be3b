"""Tell real photographs from AI-generated images (CIFAKE). Every model speaks one number: P(fake)."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .models import create_model, list_models
from .predict import DEFAULT_MODEL, Predictor, load, shipped_models
from .preprocess import CLASSES, INPUT_SIZE, ImageError, load_image

__all__ = [
    "CLASSES", "INPUT_SIZE", "DEFAULT_MODEL", "CheckpointError", "ImageError", "Predictor",
    "create_model", "list_models", "load", "load_checkpoint", "load_image", "save_checkpoint", "shipped_models",
]
