"""Batched prediction on in-memory uint8 image tensors (the training loop is train/engine.py)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .preprocess import MEAN, STD, normalize


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 512,
                   mean=MEAN, std=STD, progress: bool = False) -> np.ndarray:
    """Logits for a (N, 3, H, W) uint8 tensor, in float32 (no autocast: predictions stay exact)."""
    model.eval()
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc="predict", unit="batch", disable=not progress,
                      leave=False):
        x = normalize(images[start:start + batch_size].to(device), mean, std)
        out.append(model(x.contiguous(memory_format=torch.channels_last)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def sigmoid(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64) / temperature))
