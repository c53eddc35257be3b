"""Load test of the web app: many clients at once, mixing prediction and explanation.

    python -m bench.load_test [--requests 500] [--concurrency 16] [--explains 1000] [--save]

It starts ``python app.py`` as a separate server process (as a Space runs it), waits for it, and then:
1. sends ``--requests`` requests from ``--concurrency`` client threads through ``gradio_client``,
   half ``/predict`` and half ``/explain`` (with the CAM methods the page offers, ScoreCAM aside: it is
   minutes per image on resnet50), over the example images and the three models; it prints the
   errors (target 0) and the p50/p95/max latency of each endpoint;
2. keeps sending ``/explain`` until ``--explains`` explanations have been served in all, and prints
   the server's resident memory (``/proc/PID/status`` VmRSS) after the warm-up and at the end.
   Target: under 50 MB growth, which shows the Grad-CAM hooks are released after every request.
Runtime: about 3 minutes on 2 cores. ``--save`` writes docs/results/load.json.
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["GradCAM", "GradCAM++", "HiResCAM", "LayerCAM", "XGradCAM", "EigenCAM"]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Load test of the web app through gradio_client")
    p.add_argument("--requests", type=int, default=500, help="requests in the mixed phase")
    p.add_argument("--concurrency", type=int, default=16, help="client threads")
    p.add_argument("--explains", type=int, default=1000, help="explanations served in all before memory is read")
    p.add_argument("--models", nargs="*", default=["fakespot", "cnn", "resnet50"])
    p.add_argument("--save", action="store_true", help="write docs/results/load.json")
    return p


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found")


def start_server(port: int) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the app did not start within 180 s")


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


def main(args: argparse.Namespace) -> dict:
    from gradio_client import Client, handle_file

    images = sorted(str(p) for p in (ROOT / "assets" / "examples").glob("*.jpg"))  # not SOURCES.md
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    proc = start_server(port)
    url = f"http://127.0.0.1:{port}/"
    print(f"app started in {time.time() - t0:.1f} s (pid {proc.pid})", flush=True)
    clients: dict[int, Client] = {}

    def call(job: tuple[int, str, str, str, str]) -> tuple[str, float, str | None]:
        _, endpoint, image, model, method = job
        tid = threading.get_ident()
        if tid not in clients:
            clients[tid] = Client(url, verbose=False)
        t = time.perf_counter()
        try:
            if endpoint == "/predict":
                out = clients[tid].predict(handle_file(image), model, api_name="/predict")
                assert 0 <= out["p_fake"] <= 1
            else:
                heat, info = clients[tid].predict(handle_file(image), model, method, "predicted", api_name="/explain")
                assert Path(heat).is_file() and info["cam_method"] == method
            return endpoint, time.perf_counter() - t, None
        except Exception as e:  # noqa: BLE001 -- every failure is counted and shown, not raised
            return endpoint, time.perf_counter() - t, f"{type(e).__name__}: {e}"[:300]

    def jobs(endpoints):
        combos = itertools.product(images, args.models, METHODS)
        for i, (endpoint, (image, model, method)) in enumerate(zip(endpoints, itertools.cycle(combos))):
            yield i, endpoint, image, model, method

    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            # Warm-up: every image x model x method once through each endpoint, so that first-use
            # allocations (each model's activations and gradients, each CAM method) are not counted as growth.
            n_combos = len(images) * len(args.models) * len(METHODS)
            list(pool.map(call, jobs(["/explain"] * n_combos)))
            list(pool.map(call, jobs(["/predict"] * n_combos)))
            before = rss_mb(proc.pid)
            t = time.perf_counter()
            mixed = list(pool.map(call, jobs(itertools.islice(itertools.cycle(["/predict", "/explain"]),
                                                              args.requests))))
            mixed_s = time.perf_counter() - t
            served = sum(e == "/explain" for e, _, _ in mixed)
            trace = [(served, rss_mb(proc.pid))]  # (explanations served, MB)
            rest = []
            while served < args.explains:
                chunk = min(250, args.explains - served)
                rest += pool.map(call, jobs(["/explain"] * chunk))
                served += chunk
                trace.append((served, rss_mb(proc.pid)))
            after = trace[-1][1]
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

    errors = [err for _, _, err in mixed + rest if err]
    result = {"requests": len(mixed), "concurrency": args.concurrency, "models": args.models,
              "errors": len(errors), "error_examples": sorted(set(errors))[:5], "mixed_seconds": round(mixed_s, 1),
              "throughput_rps": round(len(mixed) / mixed_s, 1), "latency_ms": {},
              "explains_total": served, "rss_mb_before": round(before, 1),
              "rss_trace_mb": [[n, round(m, 1)] for n, m in trace], "warmup_requests": 2 * n_combos,
              "rss_mb_after": round(after, 1), "rss_growth_mb": round(after - before, 1)}
    for endpoint in ("/predict", "/explain"):
        xs = [s * 1000 for e, s, err in mixed if e == endpoint and not err]
        result["latency_ms"][endpoint] = {"n": len(xs), "p50": round(percentile(xs, 50)),
                                          "p95": round(percentile(xs, 95)), "max": round(max(xs, default=0))}
    print(f"\n{len(mixed)} requests at concurrency {args.concurrency} in {mixed_s:.1f} s "
          f"({result['throughput_rps']} requests/s), errors: {len(errors)}")
    for e in result["error_examples"]:
        print(f"  {e}")
    print(f"{'endpoint':<10} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for endpoint, m in result["latency_ms"].items():
        print(f"{endpoint:<10} {m['n']:>5} {m['p50']:>8} {m['p95']:>8} {m['max']:>8}")
    print("server memory after N explanations: " + ", ".join(f"{n}: {m:.0f} MB" for n, m in trace))
    print(f"server memory: {before:.1f} MB after warm-up, {after:.1f} MB after {result['explains_total']} "
          f"explanations: growth {after - before:+.1f} MB (target < 50 MB)")
    return result


if __name__ == "__main__":
    args = get_args_parser().parse_args()
    t = time.perf_counter()
    res = main(args)
    if args.save:
        from train.results import save_result

        save_result("load", res, started=t)
    sys.exit(1 if res["errors"] else 0)
