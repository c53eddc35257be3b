"""How any image becomes the model's input: defined once, imported by training, evaluation, CLI and app.

Resize policy, for a model whose record says its input is S x S (32 for the CIFAKE models, 224 for wild):
1. Decode the first frame; apply the EXIF orientation. Large images are decoded reduced (a JPEG at a
   smaller DCT scale, others reduced in their own mode before any conversion), within MAX_DECODE_BYTES.
2. Convert to 8-bit RGB: alpha is composited over white, greyscale is replicated, CMYK and palette
   go through Pillow's conversion, 16-bit and float images are rescaled from their full range.
3. Images that are already S x S are used untouched. Anything else is centre-cropped to a square
   (the largest one, so aspect ratio is kept and nothing is stretched) and downscaled to S x S with
   Pillow's antialiased bicubic filter (``ImageOps.fit``).
4. Normalise with the mean and standard deviation in the model's record (CIFAKE's or CLIP's).

Step 3 means a 4000x3000 photo is judged on an S x S view of its centre: under a CIFAKE model a 32x32
thumbnail, whose fine detail is gone, which is why ``auto`` sends photos to the wild track.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

INPUT_SIZE = 32
# Per-channel statistics of the CIFAKE training split (100,000 images), on the 0-1 scale.
MEAN = (0.4747, 0.4573, 0.4467)
STD = (0.2553, 0.2586, 0.2767)
CLASSES = ("real", "fake")  # label 1 = fake; every model outputs one logit, sigmoid = P(fake)
ACCEPTED = ("JPEG, PNG, WebP, BMP, GIF, TIFF (JPEG up to 150 megapixels; other formats up to 128 MB decoded, about "
            "33 megapixels in colour; RGB, RGBA, greyscale, palette, CMYK, 16-bit)")
# The largest image decoded (width x height). A 108 MP phone photo passes; a file whose header
# claims more is refused before any pixel is decoded (decompression-bomb guard). Pillow's own guard
# is set to the same figure so that every caller in the process (Gradio included) agrees.
MAX_PIXELS = 150_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Pillow warns between 1x and 2x its limit; open_image refuses those files itself, so the warning is noise.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
# The most memory one decoded image may take (Pillow's in-memory size: 4 bytes a pixel for colour). A JPEG
# larger than this is decoded at a reduced DCT scale (``Image.draft``), which costs 1/4 to 1/64 of it;
# other formats decode whole, so they are refused above it (a 12000x12000 1-bit PNG is 17 KB on disk and
# 137 MB decoded, 550 MB as RGB). Large images are reduced in their own mode before any conversion to RGB
# (``shrink``), so no step multiplies this figure.
MAX_DECODE_BYTES = 128 * 1024 ** 2
# Larger decodes are reduced before conversion: below it, images decode exactly as they always have.
WORK_BYTES = 64 * 1024 ** 2
# Pillow's bytes per pixel in memory; palette images count as the RGBA they are converted to.
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 4, "PA": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}

ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image, np.ndarray]


class ImageError(ValueError):
    """An input that is not a readable image; the message says why and what is accepted."""


def open_image(src: ImageSource) -> Image.Image:
    """Open a path, bytes, file object, PIL image or HxW[xC] array as a PIL image (first frame).

    Raises ImageError with the reason (callers add the file name where they know it).
    """
    if isinstance(src, Image.Image):
        return src
    if isinstance(src, np.ndarray):
        return _array_to_pil(src)
    try:
        if isinstance(src, (str, os.PathLike)):
            if os.path.isdir(src):
                raise ImageError("is a folder, not an image file")
            if os.path.getsize(src) == 0:
                raise ImageError("empty file")
            img = Image.open(src)
        elif isinstance(src, (bytes, bytearray, memoryview)):
            if len(src) == 0:
                raise ImageError("empty file")
            img = Image.open(io.BytesIO(bytes(src)))
        else:
            img = Image.open(src)
        img.seek(0)
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except UnidentifiedImageError:
        raise ImageError(f"not a recognised image; accepted: {ACCEPTED}") from None
    except Image.DecompressionBombError:
        raise ImageError(f"refused: the file claims more than {MAX_PIXELS // 1_000_000} megapixels") from None
    except ValueError as e:
        img = _open_without_png_text(src, e)  # a text-chunk bomb costs the metadata, not the image
    except (OSError, SyntaxError, EOFError) as e:
        raise ImageError(f"cannot read image ({e})") from None
    w, h = img.size
    if w * h > MAX_PIXELS or w < 1 or h < 1:
        img.close()
        if w < 1 or h < 1:
            raise ImageError(f"image has no pixels ({w}x{h})")
        raise ImageError(f"refused: {w}x{h} is more than {MAX_PIXELS // 1_000_000} megapixels")
    need = decoded_bytes(img)
    if img.format != "JPEG" and need > MAX_DECODE_BYTES:
        img.close()
        raise ImageError(f"refused: this {w}x{h} {img.format or ''} image (mode {img.mode}) takes {need / 2 ** 20:,.0f} MB "
                         f"to decode, over the {MAX_DECODE_BYTES // 2 ** 20} MB limit for formats other than JPEG (about "
                         f"{MAX_DECODE_BYTES // 4 / 1e6:.0f} megapixels in colour); save it as a JPEG or make it smaller")
    return img


def decoded_bytes(img: Image.Image, scale: int = 1) -> int:
    """Memory Pillow needs to hold ``img`` decoded (at 1/``scale`` of its size, as a JPEG draft decodes)."""
    w, h = -(-img.size[0] // scale), -(-img.size[1] // scale)
    return w * h * _PIXEL_BYTES.get(img.mode, 4)


def draft_within(img: Image.Image, budget: int = MAX_DECODE_BYTES) -> int:
    """Decode a JPEG at the largest DCT scale (1, 1/2, 1/4, 1/8) that fits ``budget``; returns the divisor.
    Other formats decode whole (``open_image`` has refused those over the limit)."""
    if img.format != "JPEG":
        return 1
    scale = next((s for s in (1, 2, 4) if decoded_bytes(img, s) <= budget), 8)
    if scale > 1:
        img.draft(img.mode if img.mode in ("RGB", "L") else "RGB", (-(-img.size[0] // scale), -(-img.size[1] // scale)))
    return scale


def shrink(img: Image.Image, min_side: int, budget: int = WORK_BYTES) -> Image.Image:
    """``img`` reduced by a whole factor, in its own mode, so its short side stays at least ``min_side``;
    only when converting it to RGB would take more than ``budget`` (smaller images decode exactly as before).
    A 1-bit image is reduced as greyscale and a palette image as RGBA, the modes they become anyway."""
    w, h = img.size
    k = min(w, h) // max(min_side, 1)
    if k < 2 or w * h * 4 <= budget:
        return img
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    elif img.mode.startswith("I;16"):
        img = img.convert("I")
    return img.reduce(k)


PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
MAX_STRIP_BYTES = 256 * 1024 * 1024  # larger PNGs with a text bomb are refused rather than read into memory


def _open_without_png_text(src: ImageSource, error: ValueError) -> Image.Image:
    """Pillow refuses a PNG whose text chunks expand past its limits (a zlib bomb in zTXt or iTXt) before
    any pixel is read. The pixels are still an image: reopen it with the text chunks dropped and say so
    in ``img.text_stripped`` (the evidence panel shows it)."""
    if isinstance(src, (str, os.PathLike)):
        if os.path.getsize(src) > MAX_STRIP_BYTES:
            raise ImageError(f"cannot read image ({error})") from None
        data = Path(src).read_bytes()
    elif isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        src.seek(0)
        data = src.read()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ImageError(f"cannot read image ({error})") from None
    out, i = [data[:8]], 8
    while i + 12 <= len(data):  # length, type, data, CRC
        n = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        if kind not in PNG_TEXT_CHUNKS:
            out.append(data[i:i + 12 + n])
        i += 12 + n
        if kind == b"IEND":
            break
    try:
        img = Image.open(io.BytesIO(b"".join(out)))
        img.seek(0)
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"cannot read image ({e})") from None
    img.text_stripped = f"PNG text chunks dropped: {error} (a decompression bomb); the pixels were judged"
    return img


def _array_to_pil(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise ImageError(f"array of shape {a.shape}: expected HxW, HxWx3 or HxWx4")
    if a.dtype != np.uint8:
        a = np.asarray(a, dtype=np.float64)
        if a.size and a.max() <= 1.0 and a.min() >= 0.0:
            a = a * 255.0  # float images on the 0-1 scale
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8), or 1 where the metadata cannot be read (Pillow raises on some malformed
    tags, e.g. a TIFF whose XMP tag is stored as text): bad metadata must not cost the image."""
    try:
        return int(img.getexif().get(0x0112, 1))
    except (OSError, SyntaxError):  # the pixel data itself is broken (a PNG's getexif loads it): not ours to hide
        raise
    except Exception:  # noqa: BLE001 (Pillow's EXIF parser raises TypeError, ValueError, struct.error...)
        return 1


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB with EXIF orientation applied; alpha composited over white, 16-bit rescaled."""
    if orientation(img) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        if img.mode == "F" and a.max() <= 1.0:
            top = 1.0
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        base = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(base, img)
    return img.convert("RGB") if img.mode != "RGB" else img


def load_rgb(src: ImageSource) -> Image.Image:
    """Decode ``src`` fully as 8-bit RGB at its own size (for display and statistics)."""
    img = open_image(src)
    try:
        return to_rgb(img)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot decode image ({e})") from None


def fit_to_input(img: Image.Image, size: int = INPUT_SIZE) -> Image.Image:
    """Centre-crop to a square and downscale to ``size`` with antialiasing; ``size``-square images pass."""
    if img.size == (size, size):
        return img
    return ImageOps.fit(img, (size, size), method=Image.Resampling.BICUBIC)


def load_image(src: ImageSource, size: int = INPUT_SIZE) -> np.ndarray:
    """Any supported image -> the model's (size, size, 3) uint8 input, by the policy above."""
    img = open_image(src)
    try:
        if img.format == "JPEG" and min(img.size) > 4 * size:
            img.draft("RGB", (4 * size, 4 * size))  # fast reduced-scale JPEG decode
        return np.array(fit_to_input(to_rgb(shrink(img, 4 * size)), size), dtype=np.uint8)  # a writable copy
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot decode image ({e})") from None


def to_batch(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """(N, H, W, 3) uint8 arrays -> (N, 3, H, W) uint8 tensor."""
    a = np.stack(images) if isinstance(images, list) else images
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()


def normalize(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """(N, 3, H, W) uint8 tensor -> normalised float32 tensor."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255.0 - m) / s


__all__ = [
    "ACCEPTED",
    "CLASSES",
    "INPUT_SIZE",
    "MAX_DECODE_BYTES",
    "MEAN",
    "STD",
    "ImageError",
    "decoded_bytes",
    "draft_within",
    "fit_to_input",
    "load_image",
    "load_rgb",
    "normalize",
    "open_image",
    "orientation",
    "shrink",
    "to_batch",
    "to_rgb",
]
