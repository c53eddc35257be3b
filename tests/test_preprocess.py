import io

import numpy as np
import pytest
import torch
from PIL import Image

from detector.preprocess import ImageError, fit_to_input, load_image, normalize, to_batch, to_rgb
from train.augment import AugmentConfig, augment_batch


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("make", [
    lambda: Image.new("RGBA", (50, 40), (255, 0, 0, 128)),
    lambda: Image.new("L", (64, 64), 100),
    lambda: Image.new("CMYK", (48, 48), (0, 255, 0, 0)),
    lambda: Image.new("P", (33, 70)),
    lambda: Image.fromarray(np.full((40, 40), 40000, np.uint16)),
    lambda: Image.new("RGB", (4000, 3000), (10, 200, 30)),
    lambda: Image.new("1", (10, 10)),
])
def test_any_mode_and_size_becomes_32x32_rgb(make):
    a = load_image(make())
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8


def test_16bit_is_rescaled_not_clipped():
    a = load_image(Image.fromarray(np.full((8, 8), 32768, np.uint16)))
    assert 120 <= a.mean() <= 135


def test_alpha_is_composited_over_white():
    a = load_image(Image.new("RGBA", (32, 32), (0, 0, 0, 0)))
    assert (a == 255).all()


def test_32x32_passes_untouched_and_others_are_centre_cropped():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(load_image(_save(Image.fromarray(x), "PNG")), x)
    wide = np.zeros((32, 96, 3), np.uint8)
    wide[:, 32:64] = 200  # the centre square is bright, the sides black
    assert load_image(wide).mean() > 190


def test_exif_rotation_is_applied():
    img = Image.new("RGB", (64, 32), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 32, 32))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display: the white half goes to the top
    rgb = to_rgb(Image.open(io.BytesIO(_save(img, "JPEG", exif=exif.tobytes()))))
    a = np.asarray(rgb)
    assert rgb.size == (32, 64)
    assert a[:32].mean() > 200 and a[32:].mean() < 50


def test_first_gif_frame_is_used():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = _save(frames[0], "GIF", save_all=True, append_images=frames[1:])
    a = load_image(data)
    assert a[..., 0].mean() > 200 and a[..., 2].mean() < 50


@pytest.mark.parametrize("bad, why", [(b"", "empty"), (b"hello world", "not a recognised image"),
                                      (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "cannot read image|not a recognised image")])
def test_bad_bytes_raise_image_error(bad, why):
    with pytest.raises(ImageError, match=why):
        load_image(bad)


def test_truncated_jpeg_raises_image_error():
    data = _save(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    with pytest.raises(ImageError):
        load_image(data[: len(data) // 2])


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_fit_to_input_keeps_32():
    img = Image.new("RGB", (32, 32))
    assert fit_to_input(img) is img


def test_normalize_and_batch_shapes():
    x = to_batch(np.zeros((5, 32, 32, 3), np.uint8))
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.uint8
    z = normalize(x)
    assert z.dtype == torch.float32 and torch.allclose(z[:, 0], torch.full_like(z[:, 0], -0.4747 / 0.2553))


def test_augment_batch_is_seeded_and_changes_images():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    cfg = AugmentConfig(p_jpeg=0.5, p_blur=0.5, p_resize=0.5)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and a.shape == x.shape
    assert torch.equal(a, b)
    changed = (a != x).flatten(1).any(1).float().mean()
    assert changed > 0.5
    none = AugmentConfig(hflip=0, translate=0, p_color=0, p_jpeg=0, p_blur=0, p_resize=0)
    assert torch.equal(augment_batch(x, none, torch.Generator()), x)


def test_random_translate_shifts_content_by_at_most_k():
    from train.augment import random_translate

    x = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    x[:, :, 14:18, 14:18] = 255  # a bright square in the centre
    y = random_translate(x, 4, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == torch.uint8
    for img in y:
        rows, cols = img[0].nonzero(as_tuple=True)
        assert 10 <= rows.min() <= 18 and 10 <= cols.min() <= 18 and len(rows) == 16
    assert not all(torch.equal(a, x[0]) for a in y)
