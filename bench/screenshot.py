"""Screenshot the web app for the README with the browser tooling the tests use (Playwright + Chromium).

    python -m bench.screenshot [--image assets/examples/fake_cat.jpg] [--out assets/screenshot.png]
    python -m bench.screenshot --image assets/examples/wild_fake_flux.jpg --sign-c2pa --height 900 \
        --out assets/screenshot_evidence.png   # the Evidence panel, on a copy signed here by a test CA

Launches the app on a free local port, uploads the image, waits for the verdict and the heatmap, and
saves a PNG of the page. Needs Debian's Chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import io
import shutil
import socket
import tempfile
from pathlib import Path

from PIL import Image

from detector.checkpoint import atomic_write


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Screenshot the web app")
    p.add_argument("--image", default="assets/examples/fake_cat.jpg")
    p.add_argument("--method", default="GradCAM")
    p.add_argument("--out", default="assets/screenshot.png")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=1500)
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--sign-c2pa", action="store_true", help="upload a copy of the image with a C2PA manifest "
                   "declaring it AI-generated, signed by a test certificate authority made on the spot "
                   "(bench/artefacts.py), to show the Evidence panel")
    return p


def main(args: argparse.Namespace) -> None:
    from playwright.sync_api import expect, sync_playwright

    import app

    if args.sign_c2pa:
        from bench import artefacts

        signed = Path(tempfile.mkdtemp()) / Path(args.image).name
        signed.write_bytes(artefacts.c2pa_sign(Path(args.image).read_bytes(), artefacts.test_ca("Example AI Lab")))
        args.image = str(signed)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(url)
            page.locator("#upload input[type=file]").set_input_files(args.image)
            expect(page.locator("#verdict")).to_contain_text("P(fake) =", timeout=120_000)
            expect(page.locator("#heatmap img")).to_be_visible(timeout=60_000)
            expect(page.locator("#evidence")).to_contain_text("Evidence beyond the classifier", timeout=60_000)
            page.wait_for_timeout(1500)  # let the remaining images finish loading
            png = page.screenshot(full_page=False)
            browser.close()
    finally:
        app.demo.close()
    img = Image.open(io.BytesIO(png)).convert("RGB")
    buf = io.BytesIO()
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
    atomic_write(Path(args.out), buf.getvalue())
    print(f"{args.out}: {img.size[0]}x{img.size[1]}, {len(buf.getvalue()) // 1024} KiB")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
