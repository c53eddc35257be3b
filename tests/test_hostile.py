"""Hostile and odd input through every door: the prediction API, the CLI and the app.

Each kind is a file (or folder) built here from scratch. Valid images must be predicted; bad ones
must get a clear one-line reason; nothing may crash, hang or leak a traceback, and a batch goes on
past a bad file. A property-based test feeds random bytes to the image loader.
"""

from __future__ import annotations

import html

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

from detector.preprocess import ImageError, load_image
from tests.conftest import uploaded

ROOT = Path(__file__).resolve().parent.parent
OK = "ok"


# --- builders: each returns the bytes of one file ----------------------------------------------------

def _photo(w: int = 64, h: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    return Image.fromarray(np.clip(a + rng.normal(0, 8, a.shape), 0, 255).astype(np.uint8))


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h RGB pixels, with almost no pixel data behind it."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (40, 40), c) for c in ("red", "green", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def sixteen_bit_png() -> bytes:
    a = (np.linspace(0, 65535, 48 * 64).reshape(48, 64)).astype(np.uint16)
    return _save(Image.fromarray(a), "PNG")


def palette_png_with_transparency() -> bytes:
    img = _photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _save(img, "PNG", transparency=0)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    return _save(_photo(80, 40), "JPEG", exif=exif)


def broken_exif_orientation_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 9  # not a valid orientation
    return _save(_photo(), "JPEG", exif=exif)


def bad_crc_png() -> bytes:
    data = bytearray(_save(_photo(), "PNG"))
    i = data.index(b"IDAT") + 8
    data[i:i + 16] = bytes(16)  # corrupt the compressed pixels
    return bytes(data)


def float_tiff() -> bytes:
    return _save(Image.fromarray(np.linspace(0, 1, 40 * 30, dtype=np.float32).reshape(30, 40), mode="F"), "TIFF")


def heic_like() -> bytes:
    """The start of a HEIC file (an ISO-BMFF 'ftyp' box with brand heic): Pillow cannot read HEIC."""
    return struct.pack(">I", 24) + b"ftypheic" + bytes(4) + b"mif1heic" + os.urandom(200)


def zip_bytes(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buf.getvalue()


def encrypted_zip() -> bytes:
    """A zip whose entry is marked encrypted (Python cannot write encrypted zips; the flag is what readers see)."""
    data = bytearray(zip_bytes({"FAKE/a.png": _save(_photo(), "PNG")}, zipfile.ZIP_STORED))
    data[6] |= 0x1  # local header, general purpose flags
    cd = data.index(b"PK\x01\x02")
    data[cd + 8] |= 0x1  # central directory, general purpose flags
    return bytes(data)


def nested_zip(depth: int) -> bytes:
    inner = zip_bytes({"in.png": _save(_photo(seed=depth), "PNG")})
    for level in range(depth - 1):
        inner = zip_bytes({f"level{level}.zip": inner})
    return inner


PNG = _save(_photo(), "PNG")

# name -> (file name, bytes (or a function making them) or None for a folder, expected: OK or a phrase of the reason)
FILES: dict[str, tuple[str, bytes | None, str]] = {
    "empty file": ("empty.jpg", b"", "empty file"),
    "text named .jpg": ("text.jpg", b"this is a text file, not a JPEG\n" * 4, "not a recognised image"),
    "truncated JPEG": ("truncated.jpg", _save(_photo(), "JPEG")[:600], "truncated"),
    "truncated PNG": ("truncated.png", PNG[: len(PNG) // 2], "cannot"),
    "random bytes": ("random.jpg", np.random.default_rng(1).bytes(4096), "not a recognised image"),
    "random bytes, no extension": ("random.bin", np.random.default_rng(2).bytes(4096), "not a recognised image"),
    "header claims 60000x60000 (bomb)": ("bomb.png", png_claiming(60000, 60000), "megapixels"),
    "header claims 13000x12000": ("claims_156mp.png", png_claiming(13000, 12000), "megapixels"),
    "huge real dimensions (8000x6000)": ("huge.jpg", lambda: _save(
        Image.linear_gradient("L").resize((8000, 6000)).convert("RGB"), "JPEG", quality=80), OK),
    "1x1 pixel": ("one_pixel.png", _save(Image.new("RGB", (1, 1), "red"), "PNG"), OK),
    "1x2000 sliver": ("sliver.png", _save(Image.new("RGB", (1, 2000), "blue"), "PNG"), OK),
    "20000x3 strip": ("strip.png", _save(Image.new("RGB", (20000, 3), "green"), "PNG"), OK),
    "300x9000 tall panorama": ("tall.jpg", lambda: _save(_photo().resize((300, 9000)), "JPEG"), OK),
    "animated GIF": ("animated.gif", animated_gif(), OK),
    "16-bit PNG": ("sixteen_bit.png", sixteen_bit_png(), OK),
    "CMYK JPEG": ("cmyk.jpg", _save(_photo().convert("CMYK"), "JPEG"), OK),
    "palette PNG with transparency": ("palette.png", palette_png_with_transparency(), OK),
    "EXIF-rotated JPEG": ("rotated.jpg", exif_rotated_jpeg(), OK),
    "invalid EXIF orientation": ("bad_orientation.jpg", broken_exif_orientation_jpeg(), OK),
    "greyscale JPEG": ("grey.jpg", _save(_photo().convert("L"), "JPEG"), OK),
    "float TIFF": ("float.tif", float_tiff(), OK),
    "RGBA WebP": ("alpha.webp", _save(_photo().convert("RGBA"), "WEBP"), OK),
    "BMP": ("plain.bmp", _save(_photo(), "BMP"), OK),
    "SVG": ("vector.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" '
                          b'height="10"/></svg>', "not a recognised image"),
    "HEIC (unsupported)": ("photo.heic", heic_like(), "not a recognised image"),
    "AVIF": ("photo.avif", _save(_photo(), "AVIF") if features.check("avif") else heic_like(),
             OK if features.check("avif") else "not a recognised image"),
    "PNG named .jpg": ("png_inside.jpg", PNG, OK),
    "zip named .jpg": ("archive.jpg", zip_bytes({"a.png": PNG}), "not a recognised image"),
    "PNG with corrupt pixel data": ("bad_crc.png", bad_crc_png(), "cannot"),
    "folder named x.jpg": ("x.jpg", None, "folder"),
}
NON_UTF8_NAME = os.fsdecode(b"caf\xe9 \xff.png")  # a Latin-1 name on a UTF-8 file system

ZIPS: dict[str, tuple[str, bytes, dict[str, str]]] = {
    # name -> (file name, bytes, {member path as shown: expected})
    "zip bomb (50 MB of zeros)": ("bomb.zip", zip_bytes({"FAKE/zeros.png": bytes(50 * 1024 * 1024), "REAL/ok.png": PNG}),
                                  {"FAKE/zeros.png": "zip bomb", "REAL/ok.png": OK}),
    "zip with ../ path traversal": ("traversal.zip", zip_bytes({"../../evil.png": PNG, "/abs/evil2.png": PNG}),
                                    {"../../evil.png": OK, "/abs/evil2.png": OK}),
    "nested zips": ("nested.zip", nested_zip(3), {"level1.zip:level0.zip:in.png": OK}),
    "zips nested too deep": ("deep.zip", nested_zip(5), {"level3.zip:level2.zip": "nested more than"}),
    "encrypted zip": ("encrypted.zip", encrypted_zip(), {"FAKE/a.png": "encrypted"}),
    "truncated zip": ("truncated.zip", zip_bytes({"a.png": PNG})[:100], None),
}


def test_the_suite_covers_at_least_25_kinds():
    assert len(FILES) + 1 + len(ZIPS) >= 25 + 4


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    for name, data, _ in FILES.values():
        if data is None:
            (d / name).mkdir()
        else:
            (d / name).write_bytes(data() if callable(data) else data)
    (d / NON_UTF8_NAME).write_bytes(PNG)
    for name, data, _ in ZIPS.values():
        (d / name).write_bytes(data)
    return d


def single_files(d: Path) -> list[tuple[str, Path, str]]:
    return [(kind, d / name, expect) for kind, (name, _, expect) in FILES.items()] + [
        ("file name that is not UTF-8", d / NON_UTF8_NAME, OK)]


# --- the prediction API -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(FILES) + ["file name that is not UTF-8"])
def test_api_predicts_valid_files_and_refuses_bad_ones_with_a_reason(hostile, kind):
    _, path, expect = next(k for k in single_files(hostile) if k[0] == kind)
    for src in (path, path.read_bytes() if path.is_file() else path):
        if expect == OK:
            x = load_image(src)
            assert x.shape == (32, 32, 3) and x.dtype == np.uint8
        else:
            with pytest.raises(ImageError) as e:
                load_image(src)
            msg = str(e.value)
            assert expect.lower() in msg.lower() and "\n" not in msg and "Traceback" not in msg


def test_predictor_batch_goes_on_past_bad_files(hostile):
    import detector

    pred = detector.load("cnn")
    paths = [p for _, p, _ in single_files(hostile)]
    good = [p for _, p, e in single_files(hostile) if e == OK]
    p = pred.predict([load_image(x) for x in good])
    assert p.shape == (len(good),) and np.all((p >= 0) & (p <= 1))
    assert len(paths) > len(good)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=3000),
                 st.tuples(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF",
                                            b"II*\x00", b"MM\x00*"]), st.binary(max_size=3000)).map(b"".join),
                 st.tuples(st.just(PNG[:33]), st.binary(max_size=2000)).map(b"".join)))
def test_random_bytes_never_crash_the_loader(data):
    try:
        x = load_image(data)
    except ImageError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert x.shape == (32, 32, 3) and x.dtype == np.uint8


# --- the command line -----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["cnn", "wild"])
def test_cli_predicts_the_valid_files_and_reports_each_bad_one_on_one_line(hostile, tmp_path, model):
    from detector.data import printable

    files = single_files(hostile)
    zips = [hostile / name for name, _, _ in ZIPS.values()]
    r = subprocess.run([sys.executable, "-m", "detector", "predict", *[p for _, p, _ in files], *zips,
                        "--model", model, "--json"], cwd=tmp_path, capture_output=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    out, err = r.stdout.decode("utf-8"), r.stderr.decode("utf-8")  # both must be valid UTF-8
    assert r.returncode == 1, err  # 1: some inputs could not be read
    assert "Traceback" not in err
    predicted = {row["path"]: row for row in map(json.loads, out.splitlines())}
    errors = [line for line in err.splitlines() if line.startswith("error: ")]

    def reported(shown: str, expect: str) -> bool:
        return any(line.startswith(f"error: {shown}") and expect.lower() in line.lower() for line in errors)
    for kind, path, expect in files:
        shown = printable(str(path))
        if expect == OK:
            assert shown in predicted, kind
            assert 0 <= predicted[shown]["p_fake"] <= 1 and predicted[shown]["label"] in ("real", "fake")
            assert predicted[shown]["model"] == model
        else:
            assert reported(shown, expect), (kind, err)
    for kind, (name, _, members) in ZIPS.items():
        zpath = str(hostile / name)
        if members is None:  # unreadable as a zip: one line for the file
            assert reported(zpath, ""), kind
            continue
        for member, expect in members.items():
            shown = f"{zpath}:{member}"
            if expect == OK:
                assert shown in predicted, (kind, member)
            else:
                assert reported(shown, expect), (kind, member, err)
    assert not any(Path(tmp_path, p).exists() for p in ("evil.png", "../evil.png", "../../evil.png"))
    assert not Path("/abs/evil2.png").exists()


# --- the app ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["cnn", "wild"])
@pytest.mark.parametrize("kind", [k for k, v in FILES.items() if v[1] is not None] + ["file name that is not UTF-8"])
def test_app_predict_and_analyse_give_a_verdict_or_a_clear_error(hostile, kind, model):
    import gradio as gr

    import app

    _, path, expect = next(k for k in single_files(hostile) if k[0] == kind)
    def upload():  # each request uploads anew: /predict deletes its upload once it has answered
        return {"path": uploaded(path), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    if expect == OK:
        out = app.predict(upload(), model)
        assert 0 <= out["p_fake"] <= 1 and out["model"] == model
        assert len(app.analyse_ui(upload(), model, "GradCAM")) == 19
    else:
        with pytest.raises(gr.Error) as e:  # the API answers with an error
            app.predict(upload(), model)
        assert expect.lower() in e.value.message.lower() and path.name in e.value.message
        verdict, *panels = app.analyse_ui(upload(), model, "GradCAM")  # the page shows it where the verdict goes
        shown = html.unescape(verdict).replace("\\", "")
        assert "Could not read this file" in verdict and expect.lower() in shown.lower() and path.name in shown
        assert panels == [None] * 18


def test_app_batch_goes_on_past_every_bad_file_and_zip(hostile):
    import app

    paths = [uploaded(p) for _, p, _ in single_files(hostile) if p.is_file()]
    paths += [uploaded(hostile / name) for name, _, _ in ZIPS.values()]
    summary, table, downloads, bad = app.batch_ui(paths, "cnn", progress=lambda *a, **k: None)
    n_ok = sum(e == OK for _, p, e in single_files(hostile) if p.is_file())
    n_ok += sum(e == OK for _, _, m in ZIPS.values() if m for e in m.values())
    assert len(table.value["data"]) == n_ok
    reasons = [r for _, r in bad.value["data"]]
    assert any("zip bomb" in r for r in reasons) and any("encrypted" in r for r in reasons)
    assert all(r and "Traceback" not in r for r in reasons)
    assert all(Path(f).exists() for f in downloads)
