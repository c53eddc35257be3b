"""The low-level signal: a small CNN on noise residuals of native-resolution crops.

CLIP sees a 224 px summary of the whole image; this network sees the image's own pixels. It takes
``CROP``-square crops at the image's native resolution (never resized before it looks), re-encodes each
as JPEG at ``QUALITY`` (training re-encodes both classes at random qualities, so whether the upload was
a PNG or a JPEG says nothing), and looks at the up-sampling residual ``x - up(down(x))`` of each crop
(NPR, Tan et al., CVPR 2024: generators up-sample, and up-sampling leaves a pattern between neighbouring
pixels). Each crop gets a logit; the image's logit is their mean, and the crop scores placed where the
crops were are a map at native resolution.

Crops sit on a ``GRID`` x ``GRID`` lattice spread over the whole image, at multiples of 8 pixels so a
JPEG original's block grid lines up the same way in training and at inference.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .preprocess import to_rgb

CROP = 64  # side of one crop, in the image's own pixels
GRID = 4  # crops per side at inference: GRID**2 crops spread over the image
QUALITY = 85  # JPEG quality every crop is re-encoded at before the network sees it
ALIGN = 8  # crop corners at multiples of the JPEG block


def npr(x: torch.Tensor) -> torch.Tensor:
    """Up-sampling residual of (N, C, H, W) with even H, W: x minus its 2x nearest down-then-up copy."""
    return x - F.interpolate(x[:, :, ::2, ::2], scale_factor=2.0, mode="nearest")


def jpeg_array(a: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, 3) uint8 through a JPEG encode and decode at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def positions(size: int, n: int, crop: int = CROP) -> list[int]:
    """``n`` crop starts spread evenly over a side of ``size`` pixels, at multiples of ALIGN."""
    last = max(0, size - crop)
    return [min(last, int(round(last * i / max(1, n - 1))) // ALIGN * ALIGN) for i in range(n)]


def padded(a: np.ndarray, crop: int = CROP) -> np.ndarray:
    """Reflect-pad an image smaller than a crop on either side (a CIFAKE thumbnail) up to ``crop``."""
    h, w = a.shape[:2]
    if h >= crop and w >= crop:
        return a
    return np.pad(a, ((0, max(0, crop - h)), (0, max(0, crop - w)), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")


def grid_crops(img: Image.Image, n: int = GRID, crop: int = CROP) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The inference crops of an image (PIL, any mode): (n*n, crop, crop, 3) uint8, JPEG-encoded at QUALITY, and
    each crop's (x, y) top-left corner in the image. Only the crops are read from the image."""
    w, h = img.size
    if w < crop or h < crop:
        img = Image.fromarray(padded(np.asarray(to_rgb(img)), crop))
        w, h = img.size
    boxes = [(x, y) for y in positions(h, n, crop) for x in positions(w, n, crop)]
    # A large upload may be kept in its own mode (see detector.analysis): each crop becomes RGB alone.
    crops = [jpeg_array(np.asarray(to_rgb(img.crop((x, y, x + crop, y + crop)))), QUALITY) for x, y in boxes]
    return np.stack(crops), boxes


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResidualNet(nn.Module):
    """Crops (N, 3, CROP, CROP) in [0, 1] -> one logit per crop (N,). A fixed NPR residual, then seven
    3x3 conv layers (three of them stride 2) and a linear layer: about 12 M multiply-adds per 64 px crop,
    so it trains from scratch on two CPU cores."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(3, w, 1),
            _block(w, 2 * w, 2), _block(2 * w, 2 * w, 1),
            _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 1),
            _block(4 * w, 8 * w, 2), _block(8 * w, 8 * w, 1),
        )
        self.head = nn.Linear(8 * w, 1)

    def cam_layers(self) -> list[nn.Module]:
        """Grad-CAM's layer: the last conv block (8x8 at a 64 px crop)."""
        return [self.features[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = npr(x) * 8.0  # residuals are small; scale them to about unit range
        return self.head(self.features(r).mean((2, 3))).squeeze(1)


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """(N, CROP, CROP, 3) uint8 -> (N, 3, CROP, CROP) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)


@torch.inference_mode()
def crop_logits(net: ResidualNet, crops: np.ndarray) -> np.ndarray:
    """Logit of each crop, (N,) float32."""
    net.eval()
    return net(to_tensor(crops)).float().numpy()


def image_logit(net: ResidualNet, img: Image.Image, n: int = GRID) -> tuple[float, np.ndarray, list[tuple[int, int]]]:
    """The image's residual logit (mean over its grid crops), each crop's logit and its corner."""
    crops, boxes = grid_crops(img, n)
    logits = crop_logits(net, crops)
    return float(logits.mean()), logits, boxes
