"""fakespot web app: drop in an image, see the verdict, why the model decided, and how sharp it is.

    python app.py        # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change it)

Runs unchanged as a Hugging Face Space (see the README's front matter). With DETECTOR_HUB_REPO set,
checkpoints are downloaded from that Hub repository, falling back to ``checkpoints/`` when offline.
The layout lives here; every computation is in ``detector`` (analysis, explain, stats, plots).

API (gradio_client): ``/predict`` (image [, model]) -> JSON with p_fake and label;
``/explain`` (image [, model, method, target]) -> (heatmap image, JSON).
"""

from __future__ import annotations

import csv
import ctypes
import functools
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import gradio as gr
import numpy as np

import detector
from detector.analysis import UNCERTAIN_MARGIN, Analysis, analyse, batch_rows, uncertain_band
from detector.checkpoint import CheckpointError, atomic_write
from detector.data import count_images
from detector.explain import CAM_METHODS, CLASS_AGNOSTIC, Explainer, outline, overlay
from detector.plots import StatHistogramPainter, figure_to_array, model_report
from detector.predict import DEFAULT_MODEL, HUB_REPO_ENV
from detector.preprocess import ACCEPTED, CLASSES, ImageError
from detector.stats import STATS, Reference, log_spectrum

log = logging.getLogger("app")


def cap_malloc_arenas(n: int = 2) -> bool:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX=n would) before Gradio starts its worker threads.

    glibc gives each new thread its own arena, and memory freed in one is not reused by another, so a
    server whose requests hop between many threads grows without leaking. Measured with
    ``python -m train.load_test``: +220 MB over 1,000 explanations uncapped, +36 MB capped at 2.
    A no-op off glibc, or where the environment already sets MALLOC_ARENA_MAX.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-8, n))  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def atomic_image_cache_writes() -> bool:
    """Make Gradio write the images it returns atomically, so a concurrent download never sees half a file.

    Gradio 6 saves each returned image under a folder named by the hash of its bytes with
    ``Path.write_bytes``, which truncates the file and then fills it. Two requests that return the same
    image (two people clicking the same example) rewrite the same path, and a download that lands in
    between gets a short body: ``python -m train.load_test`` saw "peer closed connection without
    sending complete message body (received 0 bytes, expected 18315)" on one of 1,250 requests, and
    rewriting a cached file while reading it tore 1.4% of the reads. Here the bytes go to a temporary
    file in the same folder and are renamed into place (as Gradio already does in
    ``save_file_to_cache``); a complete copy already there is reused. Returns False, changing
    nothing, if this Gradio no longer has the function (the test for it then fails).
    """
    from gradio import processing_utils as pu

    if not all(hasattr(pu, f) for f in ("save_pil_to_cache", "encode_pil_to_bytes", "hash_bytes")):
        return False

    def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
        data = pu.encode_pil_to_bytes(img, format)
        path = (Path(cache_dir) / pu.hash_bytes(data) / f"{name}.{format}").resolve()
        try:
            if path.stat().st_size == len(data):  # the folder is named by the bytes' hash: same bytes
                os.utime(path)  # delete_cache ages files by time: a reused copy counts as new
                return str(path)
        except FileNotFoundError:
            pass
        atomic_write(path, data)
        return str(path)

    pu.save_pil_to_cache = save_pil_to_cache
    return True


cap_malloc_arenas()
atomic_image_cache_writes()
# A user's mistake is shown on the page with its reason; the server log gets no traceback for it.
UserError = functools.partial(gr.Error, print_exception=False)
ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "assets" / "examples"
MAX_FILE_SIZE = "25mb"  # per upload; a batch zip counts as one file
CONCURRENCY = 2  # requests computed at once (2 CPU cores); the rest wait in the queue
QUEUE_SIZE = 64
EXPORT_DIR = Path(tempfile.gettempdir()) / "fakespot-exports"
EXPORT_MAX_AGE_S = 3600
VIEW = 256  # side of the enlarged 32x32 views


def load_models() -> tuple[dict[str, tuple], list[str]]:
    """Every shipped model, loaded once: name -> (predictor, explainer); plus notes to show the user.

    A model whose record or weights are missing, truncated or tampered with is left out and the page
    says why; the app still starts with the models that load.
    """
    notes, models = [], {}
    ckpt = Path(detector.predict.CHECKPOINT_DIR)
    names = sorted({p.stem for p in ckpt.glob("*.json")} | {p.stem for p in ckpt.glob("*.safetensors")}
                   | {DEFAULT_MODEL}, key=lambda n: (n != DEFAULT_MODEL, n))
    if os.environ.get(HUB_REPO_ENV):
        notes.append(f"Checkpoints are fetched from the Hugging Face Hub repository `{os.environ[HUB_REPO_ENV]}`.")
    for name in names:
        try:
            pred = detector.load(name, notes=notes)
            models[name] = (pred, Explainer(pred))
        except (CheckpointError, OSError, ValueError) as e:
            notes.append(f"Model `{name}` could not be loaded and is not offered: {e}")
            log.warning("model %s not loaded: %s", name, e)
    if not models:
        notes.append(f"No model could be loaded from `{ckpt}`: the app cannot judge images. Restore the "
                     f"checkpoints (`git checkout checkpoints/`) or set `{HUB_REPO_ENV}` to a Hub repository "
                     "that holds them.")
    elif DEFAULT_MODEL not in models:
        notes.append(f"The default model `{DEFAULT_MODEL}` is missing; `{next(iter(models))}` is used instead.")
    return models, notes


MODELS, NOTES = load_models()
MODEL_NAMES = list(MODELS)
DEFAULT = DEFAULT_MODEL if DEFAULT_MODEL in MODELS else (MODEL_NAMES[0] if MODEL_NAMES else None)
REFERENCE = Reference.load()
PAINTER = StatHistogramPainter(REFERENCE)
CIFAKE_JPEG_QUALITY = sorted({q for c in REFERENCE.summary.get("jpeg_quality", {}).values() for q in c})


def _model(name: str | None):
    if not MODELS:
        raise UserError("No model is loaded; see the note at the top of the page.")
    name = name or DEFAULT
    if name not in MODELS:
        raise UserError(f"Unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}.")
    return MODELS[name]


def _method(name: str | None) -> str:
    name = name or "GradCAM"
    if name not in CAM_METHODS:
        raise UserError(f"Unknown CAM method {name!r}; choose one of {', '.join(CAM_METHODS)}.")
    return name


def _upload(value) -> tuple[str | None, str]:
    """The uploaded file's path and the name to show, from what an image event receives.

    Image events run with ``preprocess=False``: Gradio's own preprocessing opens every upload with
    PIL before the app sees it, so a bad file would get Gradio's wording instead of ours. The raw
    value is Gradio's file record, whose path Gradio has already checked lies in its upload cache;
    in-process callers (tests, scripts) may pass a plain path.
    """
    if value is None:
        return None, ""
    if isinstance(value, (str, os.PathLike)):
        return str(value), Path(value).name
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"]), str(value.get("orig_name") or Path(value["path"]).name)
    if getattr(value, "path", None):
        return str(value.path), str(getattr(value, "orig_name", None) or Path(value.path).name)
    raise UserError(f"Expected an uploaded image file. Accepted: {ACCEPTED}.")


def _run(image, model: str | None, method: str | None = None, explain: bool = True) -> Analysis:
    path, shown = _upload(image)
    if path is None:
        raise UserError(f"Drop, paste or upload an image first. Accepted: {ACCEPTED}.")
    pred, explainer = _model(model)
    try:
        return analyse(pred, path, explainer if explain else None, _method(method))
    except ImageError as e:
        raise UserError(f"{shown}: {e}") from None


# --- rendering helpers: Analysis -> what the page shows -------------------------------------------

def verdict_markdown(a: Analysis) -> str:
    lo, hi = uncertain_band(a.threshold)
    head = {"fake": "Likely AI-generated", "real": "Likely a real photograph",
            "uncertain": f"Uncertain (leaning {a.label})"}[a.verdict]
    return (f"## {head}\n**P(fake) = {a.p_fake:.3f}** · decision threshold {a.threshold:.2f} · "
            f"uncertain between {lo:.2f} and {hi:.2f} · model `{a.model}`")


def heatmap_views(a: Analysis) -> tuple[np.ndarray, str, np.ndarray, str]:
    other = CLASSES[1 - CLASSES.index(a.label)]
    views = []
    for cls, role in ((a.label, "predicted"), (other, "other")):
        cam = a.heatmaps[cls]
        label = f"{a.method}: regions that push toward '{cls}' ({role} class)"
        if a.method in CLASS_AGNOSTIC:
            label = f"{a.method} (class-agnostic: the same map for both classes)"
        elif not cam.any():
            label += f": empty, no region pushes toward '{cls}'"
        views += [overlay(a.model_input, cam, VIEW), label]
    return tuple(views)


def background_markdown(a: Analysis) -> str:
    area = a.background_area
    lines = []
    for cls in (a.label, CLASSES[1 - CLASSES.index(a.label)]):
        share = a.background_share[cls]
        if np.isnan(share):
            lines.append(f"- toward **{cls}**: empty map, no share")
        else:
            lines.append(f"- toward **{cls}**: **{share:.0%}** of the heatmap energy is on the background")
    return ("**Where the model looked.** The object (outlined) was found with OpenCV's GrabCut; the background "
            f"is {area:.0%} of the image, so an evenly spread map would put {area:.0%} there.\n" + "\n".join(lines))


def stats_table(a: Analysis) -> list[list]:
    rows = []
    for name, (label, meaning) in STATS.items():
        v = a.stats[name]
        s = REFERENCE.stats[name]
        rows.append([label, round(v, 4), round(s["real"]["median"], 4), round(s["fake"]["median"], 4),
                     round(REFERENCE.percentile(name, "real", v), 1), round(REFERENCE.percentile(name, "fake", v), 1),
                     REFERENCE.leaning(name, v), meaning])
    return rows


STATS_HEADERS = ["statistic", "this image", "real median", "fake median", "percentile (real)",
                 "percentile (fake)", "reading", "meaning"]


def jpeg_markdown(a: Analysis) -> str:
    cifake = "/".join(CIFAKE_JPEG_QUALITY) or "?"
    if a.jpeg_quality is None:
        return f"The file is {a.format or 'an image'}, not a JPEG. (Every CIFAKE image is a JPEG of quality {cifake}.)"
    return (f"The file is a JPEG of estimated quality **{a.jpeg_quality}** (libjpeg scale). Every CIFAKE image, real "
            f"and fake, is a JPEG of quality {cifake}, so quality alone says nothing about the class; a very "
            "different quality means the image has been through another encoder.")


# --- event handlers ---------------------------------------------------------------------------------

def analyse_ui(image, model: str, method: str):
    """The Analyse tab: everything for one image."""
    if image is None:  # the image was cleared
        return [None] * 14
    a = _run(image, model, method)
    heat_pred, label_pred, heat_other, label_other = heatmap_views(a)
    return (
        verdict_markdown(a),
        {"fake": a.p_fake, "real": 1 - a.p_fake},
        gr.Image(value=np.kron(a.model_input, np.ones((VIEW // a.model_input.shape[0],) * 2 + (1,), np.uint8)),
                 label=f"what the model sees: its {a.model_input.shape[0]}x{a.model_input.shape[1]} input"),
        gr.Image(value=a.display, label=f"your image ({a.size[0]}x{a.size[1]})"),
        ("**Note:** " if a.large else "") + a.size_note(),
        gr.Image(value=heat_pred, label=label_pred),
        gr.Image(value=heat_other, label=label_other),
        outline(a.model_input, a.foreground, VIEW),
        background_markdown(a),
        stats_table(a),
        PAINTER.render(a.stats),
        log_spectrum(a.model_input, 192),
        jpeg_markdown(a),
        a.summary(),
    )


def predict_api(image, model: str = None) -> dict:
    """/predict: one image -> {p_fake, label, verdict, threshold, model, stats, ...}."""
    return _run(image, model, explain=False).summary()


def explain_api(image, model: str = None, method: str = "GradCAM", target: str = "predicted"):
    """/explain: one image -> (heatmap overlay for the target class, JSON with the background share)."""
    a = _run(image, model, method)
    if target not in ("predicted", *CLASSES):
        raise UserError(f"target must be 'predicted', 'real' or 'fake', got {target!r}")
    cls = a.label if target == "predicted" else target
    return overlay(a.model_input, a.heatmaps[cls], VIEW), dict(a.summary(), target=cls)


def _prune_exports() -> None:
    now = time.time()
    for d in EXPORT_DIR.glob("*"):
        if d.is_dir() and now - d.stat().st_mtime > EXPORT_MAX_AGE_S:
            shutil.rmtree(d, ignore_errors=True)


def batch_ui(files, model: str, progress=gr.Progress()):
    """The Batch tab: many files or zips -> table, summary, CSV and JSON downloads, and the bad files."""
    if not files:
        raise UserError(f"Upload some images or a zip of images first. Accepted: {ACCEPTED}, and .zip.")
    pred, _ = _model(model)
    paths = [str(f) for f in files]
    total = max(count_images(paths), 1)
    rows, errors = [], []
    progress((0, total), desc="analysing", unit="images")
    for r, e, done in batch_rows(pred, paths, {p: Path(p).name for p in paths}):
        rows += r
        errors += e
        progress((min(done, total), total), desc="analysing", unit="images")
    columns = ["file", "p_fake", "label", "verdict", *STATS, "jpeg_quality"]
    n_fake = sum(r["label"] == "fake" for r in rows)
    n_unc = sum(r["verdict"] == "uncertain" for r in rows)
    summary = (f"**{len(rows)} images analysed** with `{pred.name}`: **{n_fake} likely fake**, "
               f"**{len(rows) - n_fake} likely real** ({n_unc} of them uncertain, P(fake) within "
               f"{UNCERTAIN_MARGIN} of the threshold {pred.threshold:.2f}); **{len(errors)} files could not be read**.")
    EXPORT_DIR.mkdir(parents=True, exist_ok=True)
    _prune_exports()
    out = EXPORT_DIR / uuid.uuid4().hex
    out.mkdir()
    with open(out / "fakespot_results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns + ["error"])
        w.writeheader()
        w.writerows(rows)
        w.writerows({"file": e["file"], "error": e["reason"]} for e in errors)
    with open(out / "fakespot_results.json", "w", encoding="utf-8") as f:
        json.dump({"model": pred.name, "threshold": pred.threshold, "results": rows, "errors": errors}, f, indent=1)
    table = [[r[c] for c in columns] for r in rows]
    bad = [[e["file"], e["reason"]] for e in errors]
    return (summary, gr.Dataframe(value=table, headers=columns), [str(out / "fakespot_results.csv"),
            str(out / "fakespot_results.json")], gr.Dataframe(value=bad, headers=["file", "reason"]))


def model_tab(name: str):
    """The Models tab for one model: its measured figures and plots, from its checkpoint record."""
    pred, _ = _model(name)
    rec = pred.record
    metrics = rec.get("metrics", {})
    rows = ["| split | images | accuracy | precision | recall | F1 | ROC-AUC | AP | real acc. | fake acc. |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for key, label in (("test", "CIFAKE test (official)"), ("test_dedup", "CIFAKE test (deduplicated)"),
                       ("validation", "validation (carved from train)")):
        m = metrics.get(key)
        if m:
            rows.append(f"| {label} | {m.get('n', '')} | {m['accuracy']:.2%} | {m.get('precision', float('nan')):.4f} | "
                        f"{m.get('recall', float('nan')):.4f} | {m.get('f1', float('nan')):.4f} | "
                        f"{m.get('roc_auc', float('nan')):.4f} | {m.get('average_precision', float('nan')):.4f} | "
                        f"{m.get('real_accuracy', float('nan')):.2%} | {m.get('fake_accuracy', float('nan')):.2%} |")
    minutes = rec.get("train_seconds")
    info = (f"**`{pred.name}`** ({rec['arch']}, {rec.get('parameters', '?'):,} parameters"
            + (f", trained {minutes / 60:.0f} min on a 2-core CPU" if minutes else "") +
            f"); threshold {pred.threshold:.2f}, temperature {pred.temperature:.2f}.")
    test = metrics.get("test")
    plot = figure_to_array(model_report(test, f"{pred.name} on the CIFAKE test split")) if test else None
    return info + "\n\n" + "\n".join(rows), plot


GUIDE = """
### How to read the results

**The verdict** is P(fake), the model's probability that the image was generated by Stable Diffusion 1.4.
Near the threshold the page says *uncertain*: treat those as a coin toss. The models learned from
CIFAKE, 32x32 images of CIFAR-10 subjects: they judge a 32x32 thumbnail of your image, and their accuracy
(about 97% on CIFAKE's own test images) does **not** carry over to large photos, other generators, or
images that have been edited, screenshotted or heavily recompressed. No verdict here is proof.

**The heatmap** (Grad-CAM and relatives, from pytorch-grad-cam) colours the regions whose features moved
the model's score toward a class: red is strong, blue is none. The maps are computed on the models' 2x2 to
4x4 feature grids and smoothed to 32x32, so they are coarse. Different methods can disagree; a map shows
what the model used, not where an artefact truly is. The *background share* measures how much of a map's
energy falls outside the main object (found automatically with GrabCut, outlined in yellow): the CIFAKE
paper found detectors often look at background imperfections. Compare it with the background's share of
the image, which is what an evenly spread map would score.

**The statistics** are computed on the same 32x32 thumbnail and placed against the real (blue) and fake
(red) images of the CIFAKE training split. Stable Diffusion images there are on average sharper and
noisier (higher Laplacian variance, Tenengrad, high-frequency energy and noise level), but the
distributions overlap widely: one statistic is a hint, never a verdict. Resizing, blurring and JPEG
compression move all of them.
"""


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="fakespot: real or AI-generated?", delete_cache=(900, 3600)) as demo:
        gr.Markdown("# fakespot: real photograph or AI-generated?\nDrop in an image to get the probability "
                    "that it was generated by AI, a heatmap of the regions that drove the decision, and how its "
                    "sharpness compares with real and generated images. Trained on CIFAKE (32x32 images: CIFAR-10 "
                    "photos against Stable Diffusion 1.4).")
        for note in NOTES:
            gr.Markdown(f"> **Note:** {note}")
        with gr.Tab("Analyse"):
            with gr.Row():
                with gr.Column(scale=2):
                    image = gr.Image(type="filepath", image_mode=None, label="image (drop, paste or upload)",
                                     sources=["upload", "clipboard"], height=280, elem_id="upload")
                    model = gr.Dropdown(MODEL_NAMES, value=DEFAULT, label="model")
                    method = gr.Dropdown(list(CAM_METHODS), value="GradCAM", label="explanation method",
                                         info="ScoreCAM runs one forward pass per feature channel: seconds, or "
                                              "minutes on resnet50")
                    button = gr.Button("Analyse", variant="primary")
                    examples = sorted(EXAMPLES.glob("*"))
                    gr.Examples([[str(p)] for p in examples if p.is_file()], inputs=[image],
                                label="examples: CIFAKE test images (real_*, fake_*) and a full-size photo")
                with gr.Column(scale=3):
                    verdict = gr.Markdown("Drop an image to start.", elem_id="verdict")
                    probs = gr.Label(label="P(real) and P(fake)", show_label=False)
                    with gr.Row():
                        seen = gr.Image(label="what the model sees", height=VIEW, interactive=False, format="png")
                        original = gr.Image(label="your image", height=VIEW, interactive=False)
                    size_note = gr.Markdown()
            with gr.Row():
                heat_pred = gr.Image(label="heatmap: predicted class", height=VIEW, interactive=False, format="png",
                                     elem_id="heatmap")
                heat_other = gr.Image(label="heatmap: other class", height=VIEW, interactive=False, format="png")
                objmask = gr.Image(label="object found (GrabCut), the rest is background", height=VIEW,
                                   interactive=False, format="png")
            background = gr.Markdown()
            gr.Markdown("### Blur, sharpness and noise against CIFAKE's real and fake training images")
            stats = gr.Dataframe(headers=STATS_HEADERS, interactive=False, wrap=True)
            with gr.Row():
                hist = gr.Image(label="distributions (blue real, red fake) and this image", interactive=False,
                                format="png", scale=4)
                spectrum = gr.Image(label="log spectrum (centre = low frequencies)", interactive=False,
                                    format="png", scale=1)
            jpeg = gr.Markdown()
            with gr.Accordion("JSON (what /predict and /explain return)", open=False):
                raw = gr.JSON()
            outputs = [verdict, probs, seen, original, size_note, heat_pred, heat_other, objmask, background,
                       stats, hist, spectrum, jpeg, raw]
            gr.on([image.change, model.change, method.change, button.click], analyse_ui, [image, model, method],
                  outputs, api_name="analyse", api_visibility="undocumented", preprocess=False)

        with gr.Tab("Batch"):
            gr.Markdown("Many images at once, or zips of images (folders inside zips are searched). Files that "
                        "cannot be read are listed with the reason; the rest are analysed.")
            with gr.Row():
                files = gr.File(file_count="multiple", label="images or zips", height=160)
                with gr.Column():
                    batch_model = gr.Dropdown(MODEL_NAMES, value=DEFAULT, label="model")
                    batch_button = gr.Button("Analyse all", variant="primary")
            batch_summary = gr.Markdown()
            batch_table = gr.Dataframe(label="results (click a column header to sort)", interactive=False)
            downloads = gr.File(label="downloads: CSV and JSON", file_count="multiple", interactive=False)
            batch_errors = gr.Dataframe(label="files that could not be read", headers=["file", "reason"],
                                        interactive=False)
            batch_button.click(batch_ui, [files, batch_model], [batch_summary, batch_table, downloads, batch_errors],
                               api_name="batch", concurrency_limit=1)

        with gr.Tab("Models"):
            chosen = gr.Dropdown(MODEL_NAMES, value=DEFAULT, label="model")
            first = model_tab(DEFAULT) if DEFAULT else ("", None)
            model_info = gr.Markdown(first[0])
            model_plot = gr.Image(value=first[1], label="test-split evaluation", interactive=False, format="png")
            chosen.change(model_tab, chosen, [model_info, model_plot], api_visibility="private")

        with gr.Tab("How to read this"):
            gr.Markdown(GUIDE)

        # API-only endpoints (gradio_client): hidden inputs and outputs, documented on the API page.
        with gr.Row(visible=False):
            api_image = gr.Image(type="filepath", image_mode=None)
            api_model = gr.Dropdown(MODEL_NAMES, value=DEFAULT)
            api_method = gr.Dropdown(list(CAM_METHODS), value="GradCAM")
            api_target = gr.Dropdown(["predicted", *CLASSES], value="predicted")
            api_json, api_heat, api_heat_json = gr.JSON(), gr.Image(format="png"), gr.JSON()
            api_predict, api_explain = gr.Button(), gr.Button()
        api_predict.click(predict_api, [api_image, api_model], api_json, api_name="predict", preprocess=False)
        api_explain.click(explain_api, [api_image, api_model, api_method, api_target], [api_heat, api_heat_json],
                          api_name="explain", preprocess=False)
    return demo


demo = build_demo()


def launch(**kwargs):
    """Queue and launch with the app's limits (tests pass prevent_thread_lock=True and a port)."""
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    kwargs = {"max_file_size": MAX_FILE_SIZE, "show_error": True, **kwargs}
    return demo.launch(**kwargs)


if __name__ == "__main__":
    launch()
