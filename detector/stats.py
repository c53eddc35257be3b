"""Blur, sharpness and noise statistics of an image, and where they sit among real and fake images.

Every statistic is computed on the image *as the model sees it* (its 32x32 RGB input), so an uploaded
photo is compared like for like with the CIFAKE distributions in ``assets/image_stats.json``
(computed by ``python -m train.image_stats``). The JPEG quality is read from the uploaded file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

STATS_FILE = Path(__file__).resolve().parent.parent / "assets" / "image_stats.json"

# name -> (label, one-line meaning). The order is the order of tables and plots.
STATS = {
    "laplacian_var": ("variance of the Laplacian", "edge contrast; low means blurry"),
    "tenengrad": ("Tenengrad", "mean squared Sobel gradient; low means soft"),
    "hf_energy": ("high-frequency energy", "share of spectral energy above half the Nyquist frequency"),
    "noise_sigma": ("noise level", "estimated noise sigma on 0-255 (Immerkaer 1996)"),
}
HF_CUTOFF = 0.25  # cycles/pixel; 0.5 is Nyquist

# The IJG (libjpeg) luminance quantisation table at quality 50; quality q scales it (see jpeg_quality).
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.int64)
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)


def _grey(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float64)


def laplacian_var(grey: np.ndarray) -> float:
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def tenengrad(grey: np.ndarray) -> float:
    gx = cv2.Sobel(grey, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_64F, 0, 1, ksize=3)
    return float(np.mean(gx * gx + gy * gy))


def _radius(shape: tuple[int, int]) -> np.ndarray:
    fy, fx = np.meshgrid(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), indexing="ij")
    return np.sqrt(fx * fx + fy * fy)


def hf_energy(grey: np.ndarray, cutoff: float = HF_CUTOFF) -> float:
    """Share of the (mean-removed) power spectrum at radial frequency above ``cutoff`` cycles/pixel."""
    power = np.abs(np.fft.fft2(grey - grey.mean())) ** 2
    total = power.sum()
    return float(power[_radius(grey.shape) > cutoff].sum() / total) if total > 0 else 0.0


def noise_sigma(grey: np.ndarray) -> float:
    """Immerkaer's fast noise estimate: a Laplacian-difference mask cancels structure, leaving noise."""
    h, w = grey.shape
    if h < 3 or w < 3:
        return 0.0
    r = cv2.filter2D(grey, cv2.CV_64F, _IMMERKAER)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(r).sum() / (6 * (w - 2) * (h - 2)))


def image_stats(rgb: np.ndarray) -> dict[str, float]:
    """All of ``STATS`` for one (H, W, 3) uint8 RGB image (normally the 32x32 model input)."""
    g = _grey(rgb)
    return {"laplacian_var": laplacian_var(g), "tenengrad": tenengrad(g), "hf_energy": hf_energy(g),
            "noise_sigma": noise_sigma(g)}


def log_spectrum(rgb: np.ndarray, size: int = 256) -> np.ndarray:
    """The centred log-magnitude spectrum as a (size, size) uint8 image, for display."""
    g = _grey(rgb)
    mag = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(g - g.mean()))))
    lo, hi = mag.min(), mag.max()
    img = ((mag - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(mag)).astype(np.uint8)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)


def jpeg_quality(img: Image.Image) -> int | None:
    """Estimated JPEG quality (1-100, libjpeg scale) from the file's luminance table; None if not a JPEG.

    Matches the sum of the luminance quantisation table against libjpeg's scaled tables, like
    ImageMagick's estimate; an encoder with its own tables gets the nearest libjpeg quality.
    """
    tables = getattr(img, "quantization", None)
    if getattr(img, "format", None) != "JPEG" or not tables:
        return None
    luma = np.asarray(tables[min(tables)], dtype=np.int64)
    q = np.arange(1, 101)
    scale = np.where(q < 50, 5000 // q, 200 - 2 * q)
    sums = np.clip((_IJG_LUMA[None] * scale[:, None] + 50) // 100, 1, 255).sum(1)
    return int(q[np.argmin(np.abs(sums - luma.sum()))])


class Reference:
    """The real and fake distributions of each statistic on the CIFAKE training split."""

    def __init__(self, summary: dict) -> None:
        self.summary = summary
        self.stats = summary["stats"]

    @classmethod
    def load(cls, path: str | os.PathLike = STATS_FILE) -> Reference:
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    def percentile(self, name: str, cls: str, value: float) -> float:
        """Share (0-100) of the class's training images with a lower value."""
        q = np.asarray(self.stats[name][cls]["quantiles"])  # values at percentiles 0, 1, ..., 100
        return float(np.interp(value, q, np.linspace(0, 100, len(q)), left=0.0, right=100.0))

    def density(self, name: str, cls: str, value: float) -> float:
        s = self.stats[name]
        edges, counts = np.asarray(s["edges"]), np.asarray(s[cls]["counts"], dtype=float)
        i = int(np.clip(np.searchsorted(edges, value, side="right") - 1, 0, len(counts) - 1))
        return counts[i] / max(counts.sum(), 1) / (edges[i + 1] - edges[i])

    def leaning(self, name: str, value: float) -> str:
        """Which class's training distribution makes the value more typical (a likelihood ratio)."""
        real, fake = self.density(name, "real", value), self.density(name, "fake", value)
        if real == fake == 0:
            return "outside both"
        ratio = (fake + 1e-12) / (real + 1e-12)
        if ratio > 2:
            return "more typical of fake"
        if ratio < 0.5:
            return "more typical of real"
        return "typical of both"


def summarise(values: dict[str, np.ndarray], labels: np.ndarray, bins: int = 40) -> dict:
    """Histogram and percentile summary of per-image statistics for the real (0) and fake (1) classes."""
    out = {}
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        lo, hi = np.percentile(v, [0.5, 99.5])
        log = name in ("laplacian_var", "tenengrad") and lo > 0
        edges = np.geomspace(lo, hi, bins + 1) if log else np.linspace(lo, hi, bins + 1)
        entry = {"edges": edges.tolist(), "log_x": bool(log)}
        for c, cls in enumerate(("real", "fake")):
            x = v[labels == c]
            counts, _ = np.histogram(np.clip(x, lo, hi), edges)
            entry[cls] = {"counts": counts.tolist(), "quantiles": np.percentile(x, np.arange(101)).tolist(),
                          "mean": float(x.mean()), "median": float(np.median(x)), "n": int(len(x))}
        out[name] = entry
    return out
