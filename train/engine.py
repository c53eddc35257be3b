"""The training loop on in-memory uint8 image tensors (shared by train/train.py and tests), with bf16 autocast."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from detector.preprocess import MEAN, STD, normalize
from train.augment import AugmentConfig, augment_batch


def autocast(device: torch.device, amp: str):
    """bf16 autocast where asked for and supported; a no-op context otherwise."""
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_amp(amp: str, device: torch.device) -> str:
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "none"
    return "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "none"


def train_one_epoch(model: nn.Module, optimizer, scheduler, images: torch.Tensor, labels: torch.Tensor,
                    batch_indices: list[torch.Tensor], device: torch.device, aug: AugmentConfig | None,
                    gen: torch.Generator, amp: str = "none", mean=MEAN, std=STD, progress: bool = True,
                    desc: str = "train") -> dict:
    """One pass over ``batch_indices`` (each a tensor of image indices). Returns mean loss and accuracy."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(batch_indices, desc=desc, unit="batch", disable=not progress, mininterval=2.0, leave=False)
    for idx in bar:
        x = images[idx]
        if aug is not None:
            x = augment_batch(x, aug, gen)
        x = normalize(x.to(device), mean, std).contiguous(memory_format=torch.channels_last)
        y = labels[idx].to(device).float()
        with autocast(device, amp):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = len(idx)
        total_loss += loss.item() * n
        correct += int(((logits.detach() > 0).long() == y.long()).sum())
        seen += n
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    return {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1)}
