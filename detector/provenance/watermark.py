"""The invisible-watermark check: the Stable Diffusion reference scripts' and SDXL pipelines' dwtDct
watermarks, read within a pixel, memory and time bound, and ``binomial_tail`` (how likely the bit agreement
is by accident)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .evidence import LIMITS, Evidence, Finding

WATERMARK_PIXELS = 65_536  # smaller images are not checked (invisible-watermark's own minimum)
WATERMARK_BLOCKS = 4_096  # 4x4 blocks of the LL band read at most (a 512x512 image has this many)
WATERMARK_BLOCK, WATERMARK_SCALES = 4, [0, 36, 36]  # invisible-watermark's dwtDct defaults
WATERMARK_CHANCE = 1e-6  # a pattern counts as found when agreement this high has less chance than this
# Stable Diffusion's invisible watermarks (invisible-watermark, method dwtDct): what the reference
# scripts and the SDXL pipelines embed.
WATERMARKS = {
    "Stable Diffusion 1.x reference scripts": np.unpackbits(np.frombuffer(b"StableDiffusionV1", np.uint8)),
    "Stable Diffusion 2.x reference scripts": np.unpackbits(np.frombuffer(b"SDV2", np.uint8)),
    "SDXL (Stability AI and diffusers pipelines)": np.array(
        [int(b) for b in bin(0b101100111110110010010000011110111011000110011110)[2:]], np.uint8),
}


def _watermarks(img: Image.Image, ev: Evidence) -> None:
    """Read the Stable Diffusion watermarks with invisible-watermark's dwtDct block decoder (``block_scores``).

    The library's ``WatermarkDecoder.decode`` converts to YUV, takes the Haar LL band of the U channel,
    scores every 4x4 block (``EmbedMaxDct.decode_frame``) and averages the scores of the blocks that carry
    each bit (the pattern repeats in raster order). Here the same steps run once and the block scores are
    grouped for each of the three patterns, instead of three full decodes; on large images only the top
    rows are read (WATERMARK_BLOCKS blocks: every bit still gets 30 or more votes), so the cost stays
    bounded. Same results as the library's decode on the same rows.
    """
    try:
        import cv2
        import pywt
    except ImportError:
        ev.notes.append("OpenCV or PyWavelets is not installed: watermarks were not checked")
        return
    w, h = img.size
    if w * h < WATERMARK_PIXELS or min(w, h) < 16:  # the library decoder's own minimum (256x256 pixels)
        ev.notes.append(f"{w}x{h} is too small for the watermark decoder (it needs {WATERMARK_PIXELS:,} pixels and "
                        "16 a side): not checked")
        return
    from ..preprocess import WORK_BYTES, decoded_bytes

    if decoded_bytes(img) > WORK_BYTES:  # Pillow decodes the whole file to give the top rows: bound its memory
        ev.notes.append(f"{w}x{h} is too large to check for the watermark within the memory bound "
                        f"({WORK_BYTES // 2 ** 20} MB decoded): not checked")
        return
    per_row = (w // 4 * 4 // 2) // WATERMARK_BLOCK  # blocks in one row of blocks of the LL band
    if per_row > 4 * WATERMARK_BLOCKS:  # one row of blocks would already cost four times the budget
        ev.notes.append(f"{w} px is too wide to check for the watermark within the time bound: not checked")
        return
    rows = min(h, -(-WATERMARK_BLOCKS // per_row) * 2 * WATERMARK_BLOCK)  # whole block rows: positions match
    from ..preprocess import to_rgb

    bgr = np.ascontiguousarray(np.asarray(to_rgb(img.crop((0, 0, w, rows))))[:, :, ::-1])
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
    r, c = yuv.shape[:2]
    ll, _ = pywt.dwt2(yuv[: r // 4 * 4, : c // 4 * 4, 1], "haar")  # the U channel, as the library reads it
    scores = block_scores(ll, WATERMARK_SCALES[1], WATERMARK_BLOCK)
    results = []
    for name, expected in WATERMARKS.items():
        n = len(expected)
        bits = np.array([scores[b::n].mean() * 255 > 127 for b in range(n)], np.uint8)  # the library's rule
        agree = int((bits == expected).sum())
        results.append({"watermark": name, "bits": n, "agreeing": agree, "agreement": round(agree / n, 4),
                        "chance": binomial_tail(agree, n), "votes_per_bit": len(scores) // n})
    best = min(results, key=lambda r: r["chance"])
    if best["chance"] < WATERMARK_CHANCE:
        ev.findings.append(Finding(
            "watermark", "heuristic", "ai-generated",
            f"Invisible watermark of {best['watermark']} found ({best['agreeing']} of {best['bits']} bits agree; "
            f"chance {best['chance']:.0e})",
            "The image carries the pattern that Stable Diffusion's reference code embeds in what it generates.",
            LIMITS["watermark"], {"decoded": results, "rows_read": rows}))
    else:
        ev.notes.append("No Stable Diffusion watermark: best bit agreement "
                        f"{best['agreement']:.0%} ({best['watermark']}), what chance gives; resizing and JPEG "
                        "remove it, so absence proves nothing")


def block_scores(band: np.ndarray, scale: float, block: int = WATERMARK_BLOCK) -> np.ndarray:
    """invisible-watermark's dwtDct bit score of every ``block`` x ``block`` block of ``band``, in raster order
    (``EmbedMaxDct.infer_dct_matrix``, vectorised): in each block the entry of largest magnitude other than the
    first; 1 where that magnitude modulo ``scale`` exceeds half of ``scale``, else 0. The library needs the full
    ``opencv-python`` build, which cannot share an environment with the headless one pytorch-grad-cam needs;
    these few lines keep one OpenCV (tests check the scores against the library's own decoder)."""
    r, c = band.shape[0] // block, band.shape[1] // block
    blocks = band[: r * block, : c * block].reshape(r, block, c, block).swapaxes(1, 2).reshape(r * c, block * block)
    rest = np.abs(blocks[:, 1:])
    val = rest[np.arange(len(rest)), rest.argmax(1)]  # argmax keeps the first of ties, as np.argmax does there
    return (val % scale > 0.5 * scale).astype(np.float64)


def binomial_tail(k: int, n: int) -> float:
    """P(at least k of n fair coin flips agree): how likely this agreement is by accident."""
    return float(sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n)
