"""The web app: its backend functions, the app launched headless and called through gradio_client,
and an end-to-end run in a real browser (Playwright driving Debian's Chromium)."""

from __future__ import annotations

import csv
import json
import re
import os
import shutil
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from tests.conftest import free_port, uploaded

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "assets" / "examples"
FAKE_EXAMPLE = EXAMPLES / "fake_cat.jpg"
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)


# --- backend, called directly ---------------------------------------------------------------------

def test_every_shipped_model_is_offered():
    assert app.MODEL_NAMES[:2] == ["wild", "fakespot"] and set(app.MODEL_NAMES) >= {"cnn", "resnet50"}
    assert app.CHOICES[0] == app.DEFAULT == "auto" and "clip_vit_b16" not in app.CHOICES  # a backbone is no detector
    assert app.NOTES == []  # nothing went wrong while loading


def test_analyse_ui_fills_every_output():
    out = app.analyse_ui(uploaded(FAKE_EXAMPLE), "cnn", "GradCAM++")
    assert len(out) == 19 and all(o is not None for o in out)
    verdict, evidence, probs, *_, summary = out
    assert "P(fake)" in verdict and f"P(fake) {summary['p_fake']:.2f} · {summary['verdict']}" in probs  # one verdict
    assert summary["model"] == "cnn" and summary["cam_method"] == "GradCAM++" and "by hand" in summary["reason"]
    stats_rows = out[14]
    assert "Evidence beyond the classifier" in evidence and summary["evidence"]["findings"] == []
    assert [r[0] for r in stats_rows] == [v[0] for v in app.STATS.values()]


@pytest.mark.parametrize("example,model", [("fake_cat.jpg", "fakespot"), ("wild_real_iphone6.jpg", "wild"),
                                           ("photo_grace_hopper.jpg", "wild")])
def test_auto_picks_the_track_by_size_and_says_why(example, model):
    out = app.analyse_ui(uploaded(EXAMPLES / example), "auto", "GradCAM")
    verdict, summary = out[0], out[-1]
    assert summary["model"] == model and "judged it" in summary["reason"] and "Why this model" in verdict
    if example == "wild_real_iphone6.jpg":  # 1600x1200: large enough for the tile map
        assert 1 <= len(summary["tiles"]) <= 4 and out[9].value is not None
        assert all(0 <= t["p_fake"] <= 1 for t in summary["tiles"])


def test_wild_model_tells_the_wild_examples_apart():
    p = {e: app.predict(uploaded(EXAMPLES / e))["p_fake"] for e in
         ("wild_real_iphone6.jpg", "wild_fake_recraft_v3.jpg", "wild_fake_flux.jpg")}
    assert p["wild_real_iphone6.jpg"] < min(p["wild_fake_recraft_v3.jpg"], p["wild_fake_flux.jpg"]), p


def test_provenance_evidence_leads_the_verdict_and_reaches_predict_and_batch(tmp_path):
    from bench import artefacts as art

    ca = art.test_ca("Evidence Test Lab")
    signed = tmp_path / "signed.jpg"
    signed.write_bytes(art.c2pa_sign(art.encode(art.photo_like(320, 240), "JPEG", quality=90), ca))
    sd = tmp_path / "a1111.png"
    sd.write_bytes(art.png_with_text(art.photo_like(300, 300), {"parameters": art.A1111}))
    out = app.analyse_ui(uploaded(signed), "auto", "GradCAM")
    verdict, evidence, summary = out[0], out[1], out[-1]
    assert verdict.startswith("## Content Credentials signed by Evidence Test Lab (certificate not on the trust list) "
                              "declare this image AI-generated")
    assert "P(fake) = " in verdict and "The classifier, separately" in verdict  # kept beside, not overridden
    assert "Declared in the file's metadata" in evidence and "trust anchors" in evidence
    assert summary["evidence"]["findings"][0]["source"] == "c2pa"
    assert 0 <= summary["p_fake"] <= 1
    assert app.predict(uploaded(sd))["evidence"]["findings"][0]["details"]["tool"] == "AUTOMATIC1111/Forge"
    summary_md, _table, downloads, _ = app.batch_ui([uploaded(signed), uploaded(sd), uploaded(FAKE_EXAMPLE)], "auto",
                                                   progress=lambda *a, **k: None)
    assert "2 carry provenance evidence" in summary_md
    with open(downloads[0], newline="", encoding="utf-8") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert rows["signed.jpg"]["evidence_strength"] == "declared" and rows["a1111.png"]["evidence_claim"] == "ai-generated"
    assert rows[FAKE_EXAMPLE.name]["evidence"] == ""
    results = json.loads(Path(downloads[1]).read_text())["results"]
    assert any(f["source"] == "png-text" for r in results for f in r["evidence_findings"])
    camera = tmp_path / "camera.jpg"
    camera.write_bytes(art.camera_jpeg(art.photo_like(320, 240)))
    verdict = app.analyse_ui(uploaded(camera), "auto", "GradCAM")[0]  # copied EXIF is easy: it does not lead
    assert verdict.startswith("## Likely") or verdict.startswith("## Uncertain"), verdict
    assert "**Evidence first:** Camera EXIF: Apple iPhone 13" in verdict


def test_analyse_ui_clear_returns_empty_outputs():
    assert app.analyse_ui(None, "cnn", "GradCAM") == [None] * 19


def test_serving_settings_threads_and_analytics(monkeypatch):
    import torch

    from webapp import serving

    assert app.SERVING["threads"] == torch.get_num_threads() and 1 <= app.SERVING["threads"] <= (os.cpu_count() or 1)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and app.demo.analytics_enabled is False
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("DETECTOR_THREADS", "1")
        assert serving.set_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("DETECTOR_THREADS", "many")  # not a number: the usable CPUs, with a warning
        assert serving.set_threads() == serving.usable_cpus()
    finally:
        torch.set_num_threads(before)


def test_freed_memory_goes_back_to_the_os():
    import platform

    import torch

    from webapp import serving

    rss = lambda: int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS:")).split()[1])  # noqa: E731
    blocks = [torch.ones(16 * 1024) for _ in range(8192)]  # 512 MB in 64 KB blocks: heap, not mmap
    kept = blocks[::8]  # the survivors pin the heap, so free() alone cannot shrink it
    del blocks
    before = rss()
    trimmed = serving.release_freed_memory()
    if platform.libc_ver()[0] == "glibc":
        assert trimmed and rss() < before - 200 * 1024, (before, rss())
    del kept


def test_bad_inputs_raise_clear_errors(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is text, not a JPEG")
    with pytest.raises(gr.Error, match="notes.jpg: not a recognised image"):
        app.predict(uploaded(bad), "cnn")
    verdict, *panels = app.analyse_ui(uploaded(bad), "cnn", "GradCAM")  # the page: the reason where the verdict goes
    assert "Could not read this file" in verdict and "not a recognised image" in verdict and panels == [None] * 18
    with pytest.raises(gr.Error, match="Unknown model"):
        app.predict(uploaded(FAKE_EXAMPLE), "no-such-model")
    with pytest.raises(gr.Error, match="Unknown CAM method"):
        app.explain(uploaded(FAKE_EXAMPLE), "cnn", "MagicCAM")
    with pytest.raises(gr.Error, match="ScoreCAM on resnet50 would run 4,096 forward passes"):
        app.explain(uploaded(FAKE_EXAMPLE), "resnet50", "ScoreCAM")  # refused at once, not after 24 s
    with pytest.raises(gr.Error, match="upload an image"):
        app.predict(None)


def test_batch_ui_writes_csv_and_json_and_lists_bad_files(tmp_path):
    zpath = tmp_path / "mixed.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for p in sorted(EXAMPLES.glob("*_*.jpg")):
            z.write(p, f"imgs/{p.name}")
        z.writestr("imgs/empty.png", b"")
    loose = tmp_path / "loose.png"
    Image.fromarray(np.full((40, 30, 3), 90, np.uint8)).save(loose)
    summary, table, files, errors = app.batch_ui([uploaded(zpath), uploaded(loose)], "cnn", progress=lambda *a, **k: None)
    n = len(list(EXAMPLES.glob("*_*.jpg"))) + 1
    assert f"**{n} images analysed**" in summary and "**1 file could not be read**" in summary
    assert len(table.value["data"]) == n and errors.value["data"][0][0] == "mixed.zip:imgs/empty.png"
    csv_path, json_path = files
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n + 1 and rows[-1]["error"] == "empty file"
    data = json.loads(Path(json_path).read_text())
    assert len(data["results"]) == n and data["errors"][0]["reason"] == "empty file"


def test_models_tab_reads_the_records():
    info, plot = app.model_tab("fakespot")
    assert "CIFAKE test (official)" in info and "deduplicated" in info
    assert plot.ndim == 3 and plot.shape[2] == 3
    for name in ("wild", "auto"):  # the model that judges most uploads has its figures, and auto shows them
        info, plot = app.model_tab(name)
        assert not re.search(r"\bnan\b", info) and "`wild`" in info and plot is not None and plot.ndim == 3, name
        assert re.search(r"trained \d+ min on a 2-core CPU", info), name  # its record's train_seconds, read
        # the page says how the backbone runs: the shipped record asks for int8, float32 where it fell back
        assert f"run in {app.ROUTER.predictors['wild'].precision} arithmetic" in info, name


# --- the running app, through gradio_client -------------------------------------------------------

def test_api_predict(client):
    from gradio_client import handle_file

    out = client.predict(handle_file(str(FAKE_EXAMPLE)), api_name="/predict")
    assert isinstance(out["p_fake"], float) and out["label"] in ("real", "fake")
    assert out["p_fake"] == pytest.approx(app.predict(uploaded(FAKE_EXAMPLE))["p_fake"], abs=1e-6)
    assert out["model"] == "fakespot" and "CIFAKE" in out["reason"]  # auto: a 32x32 image goes to the CIFAKE track
    cnn = client.predict(handle_file(str(FAKE_EXAMPLE)), "cnn", api_name="/predict")
    assert cnn["model"] == "cnn"


def test_api_explain_returns_a_heatmap(client):
    from gradio_client import handle_file

    heat, info = client.predict(handle_file(str(FAKE_EXAMPLE)), "fakespot", "HiResCAM", "fake", api_name="/explain")
    img = np.asarray(Image.open(heat))
    assert img.shape[:2] == (app.VIEW, app.VIEW) and img.std() > 0
    assert info["target"] == "fake" and info["cam_method"] == "HiResCAM" and 0 <= info["background_share"]["fake"] <= 1


@pytest.mark.parametrize("name, data, reason", [
    ("text.png", b"plain text", "text.png: not a recognised image; accepted: JPEG"),
    ("empty.jpg", b"", "empty.jpg: empty file"),
    ("vector.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "vector.svg: not a recognised image"),
    ("bomb.png", None, "bomb.png: refused: the file claims more than 150 megapixels"),
])
def test_api_rejects_bad_uploads_with_our_reason(client, tmp_path, name, data, reason):
    """Through HTTP, so Gradio's own upload handling is in the path too."""
    from gradio_client import handle_file

    from .test_hostile import png_claiming

    bad = tmp_path / name
    bad.write_bytes(png_claiming(60000, 60000) if data is None else data)
    for endpoint in ("/predict", "/explain"):
        with pytest.raises(Exception) as e:
            client.predict(handle_file(str(bad)), api_name=endpoint)
        assert reason in str(e.value) and "Traceback" not in str(e.value)


def test_uploads_over_the_size_limit_are_refused(client, tmp_path):
    from gradio_client import handle_file

    big = tmp_path / "big.jpg"
    big.write_bytes(bytes(26 * 1024 * 1024))
    with pytest.raises(Exception, match=r"(?i)(too large|exceed|size)"):
        client.predict(handle_file(str(big)), api_name="/predict")


def test_api_lists_the_named_endpoints(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/predict", "/explain"} <= names


# --- a real browser -----------------------------------------------------------------------------------

@pytest.fixture
def page():
    """A Chromium page at desktop size (1400x1800), closed after the test."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: apt-get install chromium"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--headless", "--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1800})
        finally:
            browser.close()


def test_browser_upload_shows_verdict_and_heatmap(page, server, tmp_path):
    from playwright.sync_api import expect

    page.goto(server)
    page.locator("#upload input[type=file]").set_input_files(str(FAKE_EXAMPLE))
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text("P(fake) =", timeout=60_000)
    expect(verdict).to_contain_text("AI-generated")  # a CIFAKE fake the default model gets right
    heat = page.locator("#heatmap img")
    expect(heat).to_be_visible(timeout=30_000)
    box = heat.bounding_box()
    assert box and box["width"] > 50 and box["height"] > 50
    page.screenshot(path=str(tmp_path / "app.png"), full_page=True)


def test_browser_headline_meter_and_api_agree(page, server, client):
    """A real photo and an AI render, uploaded in Chromium: the headline, the meter and /predict say one verdict."""
    from gradio_client import handle_file
    from playwright.sync_api import expect

    for name in ("wild_real_iphone6.jpg", "wild_fake_flux.jpg"):
        api = client.predict(handle_file(str(EXAMPLES / name)), "auto", api_name="/predict")
        page.goto(server)
        page.locator("#upload input[type=file]").set_input_files(str(EXAMPLES / name))
        expect(page.locator("#verdict")).to_contain_text(f"P(fake) = {api['p_fake']:.3f}", timeout=120_000)
        expect(page.locator("#verdict h1, #verdict h2, #verdict h3").first).to_have_text(api["headline"])
        meter = page.locator("#pmeter .pmeter")
        assert meter.get_attribute("aria-label") == f"P(fake) {api['p_fake']:.2f}, verdict {api['verdict']}", name


def test_browser_a_refused_file_and_the_captions(page, server, tmp_path):
    """A refused upload: its reason where the verdict goes and no broken-image icon; then an image: no
    output's caption covers the top of its picture; Batch: the error table shows only when a file was refused."""
    from playwright.sync_api import expect

    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is text, not a JPEG")
    page.goto(server)
    page.locator("#upload input[type=file]").set_input_files(str(bad))
    expect(page.locator("#verdict")).to_contain_text("Could not read", timeout=60_000)
    expect(page.locator("#verdict")).to_contain_text("accepted: JPEG")
    shown = page.locator("#upload img")
    if shown.count():  # the browser could not draw it: it is hidden, not a broken icon
        expect(shown.first).to_have_css("visibility", "hidden")
    page.locator("#upload input[type=file]").set_input_files(str(FAKE_EXAMPLE))
    expect(page.locator("#verdict")).to_contain_text("P(fake) =", timeout=60_000)
    heat = page.locator("#heatmap")
    expect(heat.locator("img")).to_be_visible(timeout=30_000)
    label, img = heat.locator("label").first.bounding_box(), heat.locator("img").first.bounding_box()
    assert label["y"] + label["height"] <= img["y"] + 1, (label, img)

    page.get_by_role("tab", name="Batch").click()
    expect(page.get_by_text("files that could not be read")).to_be_hidden()
    page.locator("input[type=file][multiple]").first.set_input_files([str(FAKE_EXAMPLE), str(bad)])
    page.get_by_role("button", name="Analyse all").click()
    page.get_by_text("images analysed").wait_for(timeout=60_000)
    expect(page.get_by_text("files that could not be read")).to_be_visible()


# --- faults --------------------------------------------------------------------------------------------

def test_app_starts_and_explains_itself_when_checkpoints_are_missing_or_damaged(tmp_path):
    """A separate server process over a checkpoint folder with the default's weights gone and resnet50
    truncated: the app starts, serves the model that is left, and the page says what is missing."""
    import subprocess
    import sys
    import time
    import urllib.request

    from gradio_client import Client, handle_file

    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    for f in ("cnn.json", "cnn.safetensors", "fakespot.json", "resnet50.json"):
        shutil.copy(ROOT / "checkpoints" / f, ckpt / f)
    data = (ROOT / "checkpoints" / "resnet50.safetensors").read_bytes()
    (ckpt / "resnet50.safetensors").write_bytes(data[: len(data) // 3])
    port = free_port()
    env = {**os.environ, "DETECTOR_CHECKPOINTS": str(ckpt), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("DETECTOR_HUB_REPO", None)
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(240):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            try:
                config = urllib.request.urlopen(url + "config", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the app did not start")
        assert "Model `fakespot` could not be loaded" in config and "fakespot.safetensors" in config
        assert "Model `resnet50` could not be loaded" in config
        assert "The track default `fakespot` is missing; images it would judge go to `cnn` instead" in config
        assert "Model `wild` could not be loaded" in config  # no wild checkpoint in this folder at all
        out = Client(url, verbose=False).predict(handle_file(str(FAKE_EXAMPLE)), api_name="/predict")
        assert out["model"] == "cnn" and 0 <= out["p_fake"] <= 1
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_path_outside_the_upload_folder_is_refused(server):
    """A hand-made request naming an image on the server (not an upload) must not be read."""
    import urllib.request

    body = json.dumps({"data": [{"path": str(FAKE_EXAMPLE), "meta": {"_type": "gradio.FileData"}},
                                None]}).encode()
    req = urllib.request.Request(server + "gradio_api/call/predict", body, {"Content-Type": "application/json"})
    event = json.loads(urllib.request.urlopen(req, timeout=30).read())["event_id"]
    stream = urllib.request.urlopen(f"{server}gradio_api/call/predict/{event}", timeout=60).read().decode()
    assert "event: error" in stream and "p_fake" not in stream


def test_returned_images_are_written_atomically_under_concurrent_rewrites(tmp_path):
    """Two requests returning the same image write the same content-addressed path. With Gradio's own
    save_pil_to_cache (truncate, then write) a reader racing a rewrite gets a short file: about 1% of
    reads here, and a 'peer closed connection' error in the load test. The app's version must tear none."""
    import threading
    import time

    from gradio import processing_utils as pu

    from webapp import serving

    assert serving.atomic_image_cache_writes() and pu.save_pil_to_cache.__module__ == "webapp.serving"
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    path = Path(pu.save_img_array_to_cache(np.asarray(img), str(tmp_path), format="png"))
    data = path.read_bytes()
    assert Image.open(path).size == (256, 256) and list(path.parent.glob(".*")) == []  # no staging file left

    path.write_bytes(data[:100])  # a copy torn earlier (a crash mid-write) is replaced, not reused
    assert pu.save_pil_to_cache(img, str(tmp_path), format="png") == str(path) and path.read_bytes() == data

    stop, torn, reads = time.monotonic() + 0.5, [], [0]

    def rewrite():
        i = 0
        while time.monotonic() < stop:
            if i % 50 == 0:  # now and then from scratch, so the write-and-rename path races readers too
                path.unlink(missing_ok=True)
            pu.save_pil_to_cache(img, str(tmp_path), format="png")
            i += 1

    def read():
        while time.monotonic() < stop:
            try:
                got = path.read_bytes()
            except FileNotFoundError:  # only while this test deletes it on purpose
                continue
            reads[0] += 1
            if got != data:
                torn.append(len(got))

    threads = [threading.Thread(target=rewrite), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reads[0] > 100 and torn == []


def test_the_api_is_offered_as_mcp_tools_with_usable_descriptions():
    from gradio.mcp import GradioMCPServer

    assert app.mcp_enabled()
    server = GradioMCPServer(app.demo)
    tools = server.get_tool_to_endpoint()
    assert tools["predict"] == "/predict" and tools["explain"] == "/explain"
    for name, wanted in (("predict", {"image", "model"}), ("explain", {"image", "model", "method", "target"})):
        description, params = server.get_fn_description(server.get_block_fn_from_endpoint_name(tools[name]), name)
        assert "P(fake)" in description
        assert set(params) == wanted and all(len(params[p]) > 20 for p in wanted), params  # from the Args: section


def test_cli_predict_batch_and_mcp_give_one_verdict_model_and_reason(server, client, tmp_path):
    """One decision, one place: the same file gets the same verdict, model and reason from the command line,
    /predict, the Batch tab and the MCP tool (all ask detector.predict's router and Predictor.verdict)."""
    import ast
    import base64
    import subprocess
    import sys

    import anyio
    from gradio_client import handle_file
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    photo = EXAMPLES / "photo_grace_hopper.jpg"
    keys = ("verdict", "label", "headline", "model", "reason")
    api = client.predict(handle_file(str(photo)), "auto", api_name="/predict")
    cli = json.loads(subprocess.run([sys.executable, "-m", "detector", "predict", str(photo), "--json"], cwd=ROOT,
                                    capture_output=True, text=True, timeout=300).stdout)
    _, _, downloads, _ = app.batch_ui([uploaded(photo)], "auto", progress=lambda *a, **k: None)
    batch = json.loads(Path(downloads[1]).read_text())["results"][0]

    async def mcp_call():
        data = base64.b64encode(photo.read_bytes()).decode()
        async with streamablehttp_client(f"{server}gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as s:
                await s.initialize()
                r = await s.call_tool("predict", {"image": f"data:image/jpeg;base64,{data}", "model": "auto"})
                text = next(c.text for c in r.content if getattr(c, "text", "").startswith("{"))
                return ast.literal_eval(text)  # Gradio's MCP server sends the dict's Python form

    mcp = anyio.run(mcp_call)
    assert api["model"] == "wild" and api["verdict"] in ("real", "uncertain", "fake")
    for name, other in (("cli", cli), ("batch", batch), ("mcp", mcp)):
        assert {k: other[k] for k in keys} == {k: api[k] for k in keys}, name
        assert other["p_fake"] == pytest.approx(api["p_fake"], abs=1e-4), name


def test_the_guide_quotes_the_shipped_records():
    records = {n: p.record for n, p in app.ROUTER.predictors.items()}
    text = app.guide(records)
    wild = records["wild"]
    n = wild.data["train"]["real"] + wild.data["train"]["fake"]
    assert f"trained on {n:,} real-world" in text and f"from {len(wild.data['train']['sources'])} public sources" in text
    assert f"ROC-AUC {wild.metrics['test']['roc_auc']:.2f} pooled, {wild.metrics['cv']['mean_auc']:.2f} on average" in text
    assert "outlined in cyan" in text
    assert f"at least {2 * wild.input_size} px on their longer side" in text and "{" not in text
