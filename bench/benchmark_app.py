"""Speed of the web app on the CPU: server-side work per request, and round trips through the API.

    python -m bench.benchmark_app [--models fakespot cnn resnet50] [--runs 30] [--threads 2]

For each model it prints the median server-side time of a full single-image request in the Analyse tab
(decode, prediction, Grad-CAM for both classes, object mask, statistics, histogram and view rendering:
``app.analyse_ui``), with the median of each stage. Then it launches the app and a trivial Gradio app
(one image in, a fixed JSON out) in this process and prints the median round trip of ``/predict`` and
``/explain`` through ``gradio_client`` beside the trivial app's, which is Gradio's own floor.
Targets (default model, 2 cores): server-side <= 100 ms; round trip <= floor + 100 ms.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time

import torch


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark the web app")
    p.add_argument("--models", nargs="*", default=None, help="default: every shipped model")
    p.add_argument("--image", default="assets/examples/fake_cat.jpg", help="a CIFAKE-sized image")
    p.add_argument("--photo", default="assets/examples/photo_grace_hopper.jpg", help="a full-size photo")
    p.add_argument("--large", default="assets/examples/wild_real_iphone6.jpg",
                   help="a large camera photo (the wild track's tile map runs on it)")
    p.add_argument("--method", default="GradCAM")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    return p


def median_ms(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trivial_app():
    import gradio as gr

    with gr.Blocks() as demo:
        image = gr.Image(type="filepath", image_mode=None)
        out = gr.JSON()
        gr.Button().click(lambda path: {"p_fake": 0.5, "label": "real"}, image, out, api_name="predict")
    return demo


def main(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    import app
    from detector.analysis import analyse
    from gradio_client import Client, handle_file

    from gradio import processing_utils, utils

    def uploaded(path):  # the handlers open only files in Gradio's upload folder, as an upload puts them there
        return processing_utils.save_file_to_cache(str(path), utils.get_upload_folder())

    models = args.models or app.MODEL_NAMES
    result = {"threads": torch.get_num_threads(), "runs": args.runs, "method": args.method, "server": {}, "api": {}}
    for name in models:
        pred, explainer, _ = app._model(name)
        row = {}
        wild = pred.input_size > 64
        images = (("cifake", args.image), ("photo", args.photo)) + ((("large", args.large),) if wild else ())
        for label, path in images:
            upload = uploaded(path)
            row[f"full_request_ms_{label}"] = median_ms(lambda: app.analyse_ui(upload, name, args.method), args.runs)
        staged = args.large if wild else args.image
        stages = [analyse(pred, staged, explainer, args.method).seconds for _ in range(args.runs)]
        row["stages_ms"] = {k: round(1000 * statistics.median(s[k] for s in stages), 2) for k in stages[0]}
        row["stages_image"] = staged
        result["server"][name] = row
        print(f"{name}: full request " + ", ".join(f"{row[f'full_request_ms_{label}']:.1f} ms ({label})" for label, _ in images)
              + f"; stages on {staged}: {row['stages_ms']}", flush=True)

    port = _port()
    _, url, _ = app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    tport = _port()
    trivial = trivial_app()
    _, turl, _ = trivial.queue().launch(server_name="127.0.0.1", server_port=tport, prevent_thread_lock=True, quiet=True)
    try:
        c, t = Client(url, verbose=False), Client(turl, verbose=False)
        img = handle_file(args.image)
        api = {"trivial_app_floor_ms": median_ms(lambda: t.predict(img, api_name="/predict"), args.runs)}
        for name in models:
            api[f"{name}/predict_ms"] = median_ms(lambda: c.predict(img, name, api_name="/predict"), args.runs)
            api[f"{name}/explain_ms"] = median_ms(
                lambda: c.predict(img, name, args.method, "predicted", api_name="/explain"), args.runs)
        result["api"] = {k: round(v, 1) for k, v in api.items()}
        floor = api["trivial_app_floor_ms"]
        print(f"round trip (median of {args.runs}): trivial Gradio app {floor:.0f} ms", flush=True)
        for name in models:
            p, e = api[f"{name}/predict_ms"], api[f"{name}/explain_ms"]
            print(f"  {name}: /predict {p:.0f} ms (floor + {p - floor:.0f}), /explain {e:.0f} ms (floor + {e - floor:.0f})")
    finally:
        app.demo.close()
        trivial.close()
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
