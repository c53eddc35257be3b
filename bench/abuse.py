"""The app under hostile load, measured: peak memory per request for a set of bombs, and what uploads leave on disk.

    python -m bench.abuse [--model wild] [--requests 200] [--save]

Starts the app in its own process on 127.0.0.1 (a free port; nothing else is contacted) with a short upload
lifetime (``DETECTOR_UPLOAD_TTL``, 20 s here, 600 s by default), sends a fixed list of requests one at a time,
and stops the server at the end; every request has a timeout, so the script ends by itself. For each request
the server's peak resident memory is reset (``/proc/PID/clear_refs``) and read back afterwards (``VmHWM``):
"peak added" is that peak minus the memory before the request. The disk part counts the bytes in Gradio's
upload folder after N API requests, after bare uploads that no request uses, and after the sweep.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

from bench.artefacts import nested_zip_bomb, zip_bytes

ROOT = Path(__file__).resolve().parent.parent
TTL = 20  # seconds an upload is kept in this run (the sweep runs every TTL // 2)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="auto", help="model for the image requests (auto sends photos to wild)")
    p.add_argument("--requests", type=int, default=200, help="API requests for the disk measurement")
    p.add_argument("--bare", type=int, default=20, help="uploads that no request uses")
    p.add_argument("--save", action="store_true", help="write docs/results/abuse.json")
    return p


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _jpeg(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((w, h)).convert("RGB").save(buf, "JPEG", quality=85)
    return buf.getvalue()


def bombs() -> list[tuple[str, str, bytes]]:
    """(name, file name, bytes): pixel bombs at and past the decode limit, zip bombs, and a normal photo."""
    nested = nested_zip_bomb()
    photo = (ROOT / "assets" / "examples").glob("wild_*.jpg")
    return [
        ("ordinary photo (example)", "photo.jpg", next(iter(sorted(photo))).read_bytes()),
        ("1-bit PNG 12000x12000 (refused)", "bomb_1bit.png", _png(Image.new("1", (12000, 12000)))),
        ("greyscale PNG 11000x11000 (largest accepted)", "grey_121mp.png", _png(Image.new("L", (11000, 11000), 90))),
        ("RGBA PNG 5700x5700 (largest colour accepted)", "rgba_32mp.png", _png(Image.new("RGBA", (5700, 5700), (9, 99, 199, 255)))),
        ("JPEG 14000x10000 (140 MP, decoded reduced)", "jpeg_140mp.jpg", _jpeg(14000, 10000)),
        ("nested zip bomb (3.7 GB from 12 KB)", "nested.zip", nested),
        ("zip of 20,000 tiny entries", "many.zip", zip_bytes({f"{i}.png": b"x" for i in range(20_000)})),
    ]


class Server:
    """The app in a child process, on a free loopback port, with its own upload folder."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uploads = Path(tempfile.mkdtemp(prefix="fakespot-abuse-"))
        env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
               "GRADIO_TEMP_DIR": str(self.uploads), "DETECTOR_UPLOAD_TTL": str(TTL), "GRADIO_MCP_SERVER": "False"}
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}/"
        for _ in range(240):
            try:
                httpx.get(self.url, timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise SystemExit("the app did not start within 120 s")

    def memory(self) -> tuple[float, float]:
        """(resident MB now, peak MB since the last reset)."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024

    def reset_peak(self) -> None:
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def disk(self) -> int:
        return sum(p.stat().st_size for p in self.uploads.rglob("*") if p.is_file())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.uploads, ignore_errors=True)


def measure(server: Server, client, api: str, path: Path, model: str) -> dict:
    from gradio_client import handle_file

    args = {"/predict": (handle_file(str(path)), model), "/explain": (handle_file(str(path)), model, "GradCAM", "predicted"),
            "/batch": ([handle_file(str(path))], model)}[api]
    time.sleep(0.5)
    server.reset_peak()
    before, _ = server.memory()
    t = time.perf_counter()
    try:
        out = client.predict(*args, api_name=api)
        outcome = (f"P(fake) {out['p_fake']:.2f}" if api == "/predict" else "heatmap" if api == "/explain"
                   else out[0].split("**")[1] + "; " + out[0].split("**")[-2])
    except Exception as e:  # noqa: BLE001 (the app's refusal comes back as an exception with its message)
        outcome = "refused: " + str(e).split("refused: ")[-1][:90]
    seconds = time.perf_counter() - t
    _, peak = server.memory()
    return {"api": api, "outcome": outcome, "seconds": round(seconds, 2), "peak_added_mb": round(peak - before)}


def main(args: argparse.Namespace) -> dict:
    from gradio_client import Client, handle_file

    work = Path(tempfile.mkdtemp(prefix="fakespot-bombs-"))
    server = Server()
    results: dict = {"model": args.model, "requests": [], "disk": {}}
    try:
        client = Client(server.url, verbose=False)
        print(f"app on {server.url} (pid {server.proc.pid}); resident {server.memory()[0]:.0f} MB after start")
        for name, file, data in bombs():
            path = work / file
            path.write_bytes(data)
            apis = ["/batch"] if file.endswith(".zip") else ["/predict", "/explain"]
            for api in apis:
                r = {"file": name, "bytes": len(data), **measure(server, client, api, path, args.model)}
                results["requests"].append(r)
                print(f"{name:48s} {api:9s} {r['seconds']:6.2f} s  peak +{r['peak_added_mb']:5d} MB  {r['outcome']}")
        # Six at once on the largest accepted colour image: 3 /predict and 3 /explain.
        big = work / "rgba_32mp.png"
        time.sleep(0.5)
        server.reset_peak()
        before, _ = server.memory()
        with ThreadPoolExecutor(6) as pool:
            jobs = [pool.submit(Client(server.url, verbose=False).predict, handle_file(str(big)), args.model,
                                *(("GradCAM", "predicted") if i % 2 else ()), api_name="/explain" if i % 2 else "/predict")
                    for i in range(6)]
            failures = [str(j.exception(timeout=600))[:200] for j in jobs if j.exception(timeout=600)]
        _, peak = server.memory()
        results["concurrent"] = {"requests": 6, "errors": len(failures), "failures": failures,
                                 "peak_added_mb": round(peak - before)}
        print(f"3 /predict + 3 /explain at once on the 32 MP PNG: peak +{peak - before:.0f} MB, {len(failures)} errors"
              + "".join(f"\n  error: {f}" for f in failures))

        # Disk: API requests, then bare uploads, then the sweep.
        photo = ROOT / "assets" / "examples" / "real_airplane.jpg"
        d0 = server.disk()
        for i in range(args.requests):
            client.predict(handle_file(str(photo)), "cnn", api_name="/predict")
        d1 = server.disk()
        with httpx.Client(base_url=server.url, timeout=30) as h:
            for i in range(args.bare):
                h.post("gradio_api/upload", files={"files": (f"bare{i}.jpg", _jpeg(1200, 900))})
        d2 = server.disk()
        time.sleep(TTL + TTL // 2 + 2)
        d3 = server.disk()
        results["disk"] = {"start_bytes": d0, "after_api_requests": d1, "api_requests": args.requests,
                           "after_bare_uploads": d2, "bare_uploads": args.bare, "after_sweep": d3, "ttl_s": TTL}
        print(f"upload folder: {d0:,} B at start; {d1:,} B after {args.requests} /predict requests; "
              f"{d2:,} B after {args.bare} bare uploads; {d3:,} B {TTL + TTL // 2 + 2} s later (lifetime {TTL} s)")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.save:
        from train.results import save_result

        save_result("abuse", results)
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
