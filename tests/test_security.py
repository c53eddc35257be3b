"""The app under attack, as a hostile client would send it (issue 18): every request is data, never trusted.

1. The API opens only files Gradio received for this app: crafted paths (absolute, ``../``, a symlink in
   the upload folder, a dict with and without ``meta``, a plain string) to every endpoint and MCP tool.
2. One unpack budget per request across every zip and level of nesting: bombs are refused from the zip
   directories, within a second, in a few lines.
3. Pixel bombs are refused, or decoded reduced, within a bounded memory (measured in a subprocess).
4. Uploads do not pile up: they age out after 10 minutes, and identical uploads in flight all succeed.
5. CSV cells cannot start a formula. 6. File names and metadata are escaped where HTML or Markdown is shown.
7. A zip with a bad UTF-8 name still yields its images. 8. The MCP server offers only predict and explain.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import app
from bench import artefacts as art
from bench.artefacts import nested_zip_bomb, zip_bytes
from detector.data import UnpackBudget, count_images, iter_sources
from detector.preprocess import ImageError, load_image
from tests.conftest import uploaded

ROOT = Path(__file__).resolve().parent.parent
SECRET_PROMPT = "secret prompt of the server's owner"
NOT_UPLOADED = "Not an uploaded file"


@pytest.fixture(scope="module")
def secret(tmp_path_factory) -> Path:
    """A private image on the server, outside Gradio's upload folder, with a prompt in a PNG text chunk."""
    path = tmp_path_factory.mktemp("private") / "private.png"
    path.write_bytes(art.png_with_text(art.photo_like(96, 96), {"parameters": SECRET_PROMPT}))
    return path


def call(url: str, api: str, data: list) -> tuple[str, str]:
    """One raw queue call, as any HTTP client can make it (no gradio_client upload step): (event, payload)."""
    with httpx.Client(base_url=url, timeout=60) as c:
        event_id = c.post(f"gradio_api/call/{api}", json={"data": data}).json()["event_id"]
        text = c.get(f"gradio_api/call/{api}/{event_id}").text
    events = [b for b in text.split("\n\n") if b.startswith("event:")]
    last = events[-1].split("\n", 1)
    return last[0].split(":", 1)[1].strip(), last[1].split(":", 1)[1].strip() if len(last) > 1 else ""


def crafted(secret: Path) -> dict[str, object]:
    """Payloads that name a server file instead of carrying one."""
    folder = Path(app.gr_utils.get_upload_folder())
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "planted" / "link.png"
    link.parent.mkdir(exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(secret)  # as if a symlink had got into the upload folder
    meta = {"_type": "gradio.FileData"}
    up = os.path.relpath(secret, folder)  # ../../... from the upload folder to the private file
    return {
        "absolute path, no meta": {"path": str(secret)},
        "absolute path, with meta": {"path": str(secret), "meta": meta, "orig_name": "x.png"},
        "../ out of the upload folder": {"path": str(folder / up), "meta": meta},
        "../ with no meta": {"path": f"{folder}/{up}"},
        "symlink in the upload folder": {"path": str(link), "meta": meta},
        "symlink, no meta": {"path": str(link)},
        "plain string": str(secret),
        "missing file": {"path": str(secret.parent / "no-such.png")},
        "a folder": {"path": str(secret.parent)},
    }


def _args(api: str, payload) -> list:
    return {"predict": [payload, "auto"], "explain": [payload, "auto", "GradCAM", "predicted"],
            "analyse": [payload, "auto", "GradCAM"], "batch": [[payload], "auto"]}[api]


# --- 1. server-side file read -------------------------------------------------------------------------------

@pytest.mark.parametrize("api", ["predict", "explain", "analyse", "batch"])
def test_every_endpoint_opens_only_uploaded_files(server, secret, api):
    messages = {}
    for kind, payload in crafted(secret).items():
        event, out = call(server, api, _args(api, payload))
        assert event == "error", (api, kind, out[:300])
        assert SECRET_PROMPT not in out and "p_fake" not in out, (api, kind)
        messages[kind] = out
    # The answer is the same whether the path exists, is missing or is a folder: no disk oracle.
    same = {k: re.sub(r"input_value=.*?input_type", "", messages[k].replace(str(p), "<path>")) for k, p in
            (("absolute path, no meta", secret), ("missing file", secret.parent / "no-such.png"),
             ("a folder", secret.parent))}
    assert len(set(same.values())) == 1, same
    assert not any(w in m for m in messages.values() for w in ("no such file", "is a folder", "not a recognised"))
    if api != "batch":  # Batch's file list goes through Gradio's preprocessing, which refuses these itself
        ours = {k for k, m in messages.items() if NOT_UPLOADED in m}
        assert {"absolute path, no meta", "missing file", "a folder", "symlink, no meta", "../ with no meta"} <= ours


def test_the_same_endpoints_still_judge_a_real_upload(server):
    from gradio_client import Client, handle_file

    c = Client(server, verbose=False)
    example = ROOT / "assets" / "examples" / "fake_cat.jpg"
    assert 0 <= c.predict(handle_file(str(example)), "auto", api_name="/predict")["p_fake"] <= 1


def test_handlers_refuse_paths_when_called_in_process_too(secret):
    for payload in crafted(secret).values():
        for fn in (lambda p: app.predict(p, "cnn"), lambda p: app.explain(p, "cnn"),
                   lambda p: app.analyse_ui(p, "cnn", "GradCAM"), lambda p: app.batch_ui([p], "cnn", lambda *a, **k: None)):
            with pytest.raises(app.gr.Error, match=NOT_UPLOADED):
                fn(payload)


def test_mcp_tools_open_only_what_the_client_sends(server, secret):
    import anyio
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    png = base64.b64encode((ROOT / "assets" / "examples" / "fake_cat.jpg").read_bytes()).decode()

    async def run():
        async with streamablehttp_client(f"{server}gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as s:
                await s.initialize()
                names = sorted(t.name for t in (await s.list_tools()).tools)
                results = {}
                for kind, image in (("path", str(secret)), ("dict", {"path": str(secret)}),
                                    ("file url", f"file://{secret}"), ("upload", f"data:image/jpeg;base64,{png}")):
                    r = await s.call_tool("predict", {"image": image, "model": "auto"})
                    results[kind] = (r.isError, " ".join(getattr(c, "text", "") for c in r.content))
                return names, results

    names, results = anyio.run(run)
    assert names == ["explain", "predict"]  # 8: batch_ui is not a tool
    for kind in ("path", "dict", "file url"):
        error, text = results[kind]
        assert error and SECRET_PROMPT not in text and "p_fake" not in text, (kind, text)
    error, text = results["upload"]
    assert not error and "p_fake" in text


def test_mcp_offers_only_predict_and_explain():
    from gradio.mcp import GradioMCPServer

    assert set(GradioMCPServer(app.demo).get_tool_to_endpoint()) == {"predict", "explain"}


# --- 2. zip bombs ---------------------------------------------------------------------------------------------

def _rows(paths, budget):
    t = time.perf_counter()
    rows = list(iter_sources(paths, budget))
    return rows, time.perf_counter() - t


def test_a_nested_zip_bomb_is_refused_within_a_second(tmp_path):
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(nested_zip_bomb())
    assert bomb.stat().st_size < 200_000
    rows, seconds = _rows([bomb], UnpackBudget.for_uploads())
    assert seconds < 1.0 and len(rows) <= 20, (seconds, len(rows))
    assert all(data is None and "refused" in err for _, data, err in rows)


def test_stored_nesting_is_caught_by_the_shared_budget(tmp_path):
    """Nested zips stored uncompressed (ratio 1) get past the ratio check: the budget, shared by every level,
    still stops them from the directories, in a bounded number of lines."""
    inner = zip_bytes({f"a{i}.png": bytes(900_000) for i in range(16)})
    mid = zip_bytes({f"m{i}.zip": inner for i in range(16)}, zipfile.ZIP_STORED)
    outer = tmp_path / "stored.zip"
    outer.write_bytes(zip_bytes({f"o{i}.zip": mid for i in range(16)}, zipfile.ZIP_STORED))
    budget = UnpackBudget(max_bytes=16 * 2 ** 20, max_entries=2_000, max_depth=3)
    rows, seconds = _rows([outer, outer], budget)
    assert seconds < 1.0 and len(rows) <= 20, (seconds, len(rows))
    assert budget.bytes_used <= budget.max_bytes
    assert rows[-1][2].startswith("not read: an earlier zip")  # the second upload was not opened


def test_twenty_thousand_tiny_entries_are_refused_from_the_directory(tmp_path, monkeypatch):
    many = tmp_path / "many.zip"
    many.write_bytes(zip_bytes({f"{i}.png": b"x" for i in range(20_000)}))

    def no_member_read(*args, **kwargs):
        raise AssertionError("a member was opened: the refusal must come from the directory alone")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_member_read)  # (a timing bound here failed under load)
    rows, _ = _rows([many], UnpackBudget.for_uploads())
    assert len(rows) == 1 and "lists at least 2,001 entries" in rows[0][2], rows


def test_one_budget_spans_every_zip_of_a_request(tmp_path):
    png = art.png_with_text(art.photo_like(40, 40), {})
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    for z in (a, b):
        z.write_bytes(zip_bytes({f"{i}.png": png for i in range(1_500)}, zipfile.ZIP_STORED))
    rows = list(iter_sources([a, b], UnpackBudget.for_uploads()))
    assert sum(d is not None for _, d, _ in rows) == 1_500 and "refused" in rows[-1][2]


# --- 3. pixel bombs -------------------------------------------------------------------------------------------

def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_a_one_bit_pixel_bomb_is_refused_with_the_reason():
    data = _png(Image.new("1", (12000, 12000)))
    assert len(data) < 40_000  # 17.5 KB of file, 137 MB decoded, 550 MB as RGB
    with pytest.raises(ImageError, match=r"mode 1\).*MB to decode.*limit"):
        load_image(data, 224)


PEAK_SCRIPT = """
import sys
from pathlib import Path
from detector.analysis import analyse
from detector.predict import load

def status(key):
    return int(next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key)).split()[1])

data = open(sys.argv[1], "rb").read()
pred = load("cnn")
Path("/proc/self/clear_refs").write_text("5")  # peak = now; ru_maxrss would carry the parent's over the fork
before = status("VmRSS")
a = analyse(pred, data, with_evidence=True)
print(a.size[0], (status("VmHWM") - before) // 1024)
"""


def test_the_largest_accepted_non_jpeg_decodes_within_the_memory_bound(tmp_path):
    """11000x11000 greyscale is just under the decode limit: converted to RGB at full size it would take 460 MB;
    decoded and reduced in its own mode, the whole analysis adds under 300 MB (measured in a fresh process)."""
    path = tmp_path / "grey.png"
    path.write_bytes(_png(Image.new("L", (11000, 11000), 128)))
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    width, peak_mb = map(int, out.stdout.split())
    assert width == 11000 and peak_mb < 300, peak_mb


# --- 4. disk --------------------------------------------------------------------------------------------------

def test_uploads_age_out_and_identical_uploads_in_flight_all_succeed(server, tmp_path):
    """Uploads are swept 10 minutes after they arrive (not when a request ends: Gradio names an upload by its
    content, so concurrent requests with the same image share one file, and all of them must succeed)."""
    from concurrent.futures import ThreadPoolExecutor

    from gradio_client import Client, handle_file

    assert app.demo.delete_cache == (app.UPLOAD_SWEEP_S, app.UPLOAD_TTL_S) and app.UPLOAD_TTL_S <= 600
    image = tmp_path / "same.png"
    Image.fromarray(np.random.default_rng(time.time_ns()).integers(0, 256, (48, 48, 3), np.uint8)).save(image)

    def one(i):
        c = Client(server, verbose=False)
        if i % 2:
            return c.predict(handle_file(str(image)), "cnn", "GradCAM", "predicted", api_name="/explain")[1]["p_fake"]
        return c.predict(handle_file(str(image)), "cnn", api_name="/predict")["p_fake"]

    with ThreadPoolExecutor(4) as pool:
        p = list(pool.map(one, range(4)))
    assert max(p) - min(p) < 1e-6


# --- 5. CSV formula injection ---------------------------------------------------------------------------------

def test_batch_csv_cells_cannot_start_a_formula(tmp_path):
    names = ["=1+1.png", "@SUM(1+1).png", "+cmd.png", "-2.png", "\tx.png", "plain.png"]
    paths = []
    for n in names:
        p = tmp_path / n
        Image.fromarray(art.photo_like(40, 40)).save(p, "PNG")
        paths.append(uploaded(p))
    (tmp_path / "=bad.png").write_bytes(b"not an image")
    paths.append(uploaded(tmp_path / "=bad.png"))
    _, _, downloads, _ = app.batch_ui(paths, "cnn", progress=lambda *a, **k: None)
    with open(downloads[0], newline="", encoding="utf-8") as f:
        cells = [c for row in csv.reader(f) for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
    assert "'=1+1.png" in cells and "'@SUM(1+1).png" in cells and "plain.png" in cells and "'=bad.png" in cells


# --- 6. HTML and Markdown injection ---------------------------------------------------------------------------

def test_a_file_name_in_an_error_is_escaped(tmp_path):
    bad = tmp_path / "<img src=https:evil.example>.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(app.gr.Error) as e:
        app.predict(uploaded(bad), "cnn")
    assert "<img" not in e.value.message and "&lt;img src=https:evil.example&gt;.png" in e.value.message


def test_metadata_cannot_add_markup_to_the_page(tmp_path):
    """Camera EXIF is quoted on the page (its make and model): a forged one carries markup."""
    hostile = ("![pixel](https://evil.example/a.png) <img src=https://evil.example/b.png> "
               "[click](https://evil.example) <form action=https://evil.example><input></form>")
    p = tmp_path / "hostile.jpg"
    p.write_bytes(art.camera_jpeg(art.photo_like(300, 300), make=hostile, model="*bold* `code`"))
    out = app.analyse_ui(uploaded(p), "cnn", "GradCAM")
    shown = out[0] + out[1]  # the verdict and the Evidence panel
    assert "evil.example" in shown  # the text is shown...
    assert "<img" not in shown and "<form" not in shown  # ...as text: no HTML
    for markup in (r"!\[", r"\]\(http", r"\*bold", r"`code"):  # and no Markdown unless backslash-escaped
        assert not re.search(r"(?<!\\)" + markup, shown), markup


def test_md_escapes_markup_but_keeps_words():
    assert app.md("AI-generated (by x)") == "AI-generated (by x)"
    assert app.md("![a](http://e) <b>*x*</b> | `c`") == "\\!\\[a\\](http://e) &lt;b&gt;\\*x\\*&lt;/b&gt; \\| \\`c\\`"


# --- 7. zip names ---------------------------------------------------------------------------------------------

def test_a_zip_entry_named_with_bad_utf8_is_read_with_the_rest(tmp_path):
    png = art.png_with_text(art.photo_like(40, 40), {})
    data = bytearray(zip_bytes({"good.png": png, "bXd.png": png}, zipfile.ZIP_STORED))
    for i in range(len(data) - 7):  # 'bXd' -> b'b\xffd', with the UTF-8 flag set on every header
        if data[i:i + 7] == b"bXd.png":
            data[i + 1] = 0xFF
    for sig, off in ((b"PK\x03\x04", 7), (b"PK\x01\x02", 9)):  # the high byte of the flags
        i = data.find(sig)
        while i >= 0:
            data[i + off] |= 0x08  # bit 11 = 0x800: high byte
            i = data.find(sig, i + 1)
    z = tmp_path / "names.zip"
    z.write_bytes(bytes(data))
    with pytest.raises(UnicodeDecodeError):
        zipfile.ZipFile(z)  # what the standard library does with it
    assert count_images([z]) == 2
    rows = list(iter_sources([z]))
    assert [r[2] for r in rows] == [None, None]
    assert sorted(r[0].split(":", 1)[1] for r in rows) == ["b\ufffdd.png", "good.png"]
    assert json.dumps([r[0] for r in rows])  # valid text for every export
