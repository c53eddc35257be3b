"""Training-time augmentation of (N, 3, H, W) uint8 batches (the CIFAKE track's training loop)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.io import decode_jpeg, encode_jpeg


@dataclass
class AugmentConfig:
    """Training-time augmentation; each probability is per image."""

    hflip: float = 0.5  # horizontal flip, as in the CIFAKE research
    translate: int = 4  # random shift of up to this many pixels (reflect padding + crop); 0 = off
    brightness: float = 0.1  # brightness factor drawn from [1 - b, 1 + b]
    contrast: float = 0.1  # contrast factor drawn from [1 - c, 1 + c]
    p_color: float = 0.5  # share of images that get the brightness/contrast jitter
    p_jpeg: float = 0.15  # JPEG re-compression at quality 40-95 (what the web does to uploads)
    p_blur: float = 0.1  # Gaussian blur, sigma 0.3-1.0
    p_resize: float = 0.1  # downscale to 50-90% and back up (a resized repost)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Augment a (N, 3, H, W) uint8 batch with per-image random choices; returns uint8."""
    n = x.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    flip = rand(n) < cfg.hflip
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    if cfg.translate:
        x = random_translate(x, int(cfg.translate), gen)

    color = rand(n) < cfg.p_color
    if color.any():
        xf = x[color].float()
        k = int(color.sum())
        b = 1 + (rand(k, 1, 1, 1) * 2 - 1) * cfg.brightness
        c = 1 + (rand(k, 1, 1, 1) * 2 - 1) * cfg.contrast
        xf = xf * b
        grey = (0.299 * xf[:, 0] + 0.587 * xf[:, 1] + 0.114 * xf[:, 2]).mean((1, 2)).view(k, 1, 1, 1)
        xf = (xf - grey) * c + grey  # torchvision's adjust_contrast, per image
        x = x.clone()
        x[color] = xf.clamp(0, 255).round().to(torch.uint8)

    x = _apply_to_subset(x, rand(n) < cfg.p_blur, lambda s, r: TF.gaussian_blur(
        s, kernel_size=[3, 3], sigma=[0.3 + 0.7 * r]), gen)
    x = _apply_to_subset(x, rand(n) < cfg.p_resize, lambda s, r: down_up(s, 0.5 + 0.4 * r), gen)
    x = _apply_to_subset(x, rand(n) < cfg.p_jpeg, lambda s, r: jpeg_recompress(s, int(40 + 55 * r)), gen)
    return x


def random_translate(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``k`` pixels each way: reflect-pad by ``k``, crop at a random offset."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x.float(), (k, k, k, k), mode="reflect").to(x.dtype)
    dy, dx = torch.randint(0, 2 * k + 1, (2, n), generator=gen).tolist()
    return torch.stack([padded[i, :, a:a + h, b:b + w] for i, (a, b) in enumerate(zip(dy, dx))])


def _apply_to_subset(x, mask, fn, gen, groups: int = 4):
    """Apply ``fn(subset, r)`` to the masked images, in a few groups each with its own r in [0, 1)."""
    idx = mask.nonzero().flatten()
    if idx.numel() == 0:
        return x
    x = x.clone()
    for part in idx.chunk(groups):
        r = float(torch.rand(1, generator=gen))
        x[part] = fn(x[part], r)
    return x


def down_up(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Downscale a uint8 batch by ``scale`` and back to its size (antialiased)."""
    h, w = x.shape[-2:]
    small = TF.resize(x, [max(1, round(h * scale)), max(1, round(w * scale))], antialias=True)
    return TF.resize(small, [h, w], antialias=True)


def jpeg_recompress(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Re-encode a (N, 3, H, W) uint8 batch as JPEG at ``quality``."""
    return torch.stack(decode_jpeg(encode_jpeg(list(x.contiguous()), quality=quality)))
