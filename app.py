"""fakespot web app: drop in an image, see the verdict, why the model decided, and how sharp it is.

    python app.py        # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT change it)

Runs unchanged as a Hugging Face Space (see the README's front matter). With DETECTOR_HUB_REPO set,
checkpoints are downloaded from that Hub repository, falling back to ``checkpoints/`` when offline.
The layout and the event handlers live here; every computation is in ``detector`` (analysis, explain, stats,
plots), the rendering of results and the downloads in ``webapp`` (render, export, serving).

API (gradio_client): ``/predict`` (image [, model]) -> JSON with p_fake and the verdict;
``/explain`` (image [, model, method, target]) -> (heatmap image, JSON).
"""

from __future__ import annotations

import html
import logging
import os
from collections import Counter
from pathlib import Path

from webapp import serving

serving.disable_analytics()  # before Gradio is imported: no usage reports unless GRADIO_ANALYTICS_ENABLED says so
import gradio as gr  # noqa: E402
from gradio import utils as gr_utils  # noqa: E402
import numpy as np  # noqa: E402

import detector  # noqa: E402
from detector.analysis import TILES, Analysis, analyse, batch_rows
from detector.checkpoint import CheckpointError
from detector.data import UnpackBudget, count_images
from detector.explain import CAM_METHODS, ExplainError, outline, overlay, tile_overlay
from detector.plots import StatHistogramPainter, figure_to_array, model_report
from detector.predict import (AUTO, CHECKPOINT_DIR, CIFAKE_MAX_SIDE, CIFAKE_MODEL, HUB_REPO_ENV, HUB_REVISION_ENV,
                              WILD_MODEL, AutoPredictor, checkpoint_dir, hub_settings, is_backbone,
                              shipped_models)
from detector.preprocess import ACCEPTED, CLASSES, ImageError
from detector.record import Record
from detector.residual import CROP
from detector.stats import STATS, log_spectrum
from webapp.export import csv_safe, write_exports  # noqa: F401 (csv_safe: part of the app's tested surface)
from webapp.render import (REFERENCE, STATS_HEADERS, STATS_WIDTHS, VIEW, background_markdown, enlarged,  # noqa: F401
                           evidence_markdown, heatmap_views, jpeg_markdown, md, meter_html, stats_heading, stats_table, tile_markdown,
                           verdict_markdown)

log = logging.getLogger("app")


SERVING = serving.configure()  # threads, malloc arenas, atomic Gradio cache writes (webapp/serving.py)


def UserError(message: str) -> gr.Error:  # noqa: N802 (raised like the exception class it builds)
    """A user's mistake, shown on the page with its reason; the server log gets no traceback for it. Gradio
    renders the message as HTML, and it may quote a file name the client chose: escaped, never markup."""
    return gr.Error(html.escape(message), print_exception=False)


class Unreadable(gr.Error):
    """An uploaded file that is not an image we can read: the API answers with an error, the page puts the
    reason where the verdict goes (analyse_ui)."""

    def __init__(self, message: str) -> None:
        super().__init__(html.escape(message), print_exception=False)
        self.reason = message


ROOT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "assets" / "examples"
MAX_FILE_SIZE = "25mb"  # per upload; a batch zip counts as one file
CONCURRENCY = 2  # requests computed at once (2 CPU cores); the rest wait in the queue
QUEUE_SIZE = 64
# Uploads are deleted this long after they arrive (checked every UPLOAD_SWEEP_S), not when a request ends:
# Gradio names an upload by its content, so two requests with the same image share one file (and an example's
# cached copy may be it), and the page re-runs on its upload when the model choice changes.
UPLOAD_TTL_S = int(os.environ.get("DETECTOR_UPLOAD_TTL", "600"))
UPLOAD_SWEEP_S = max(1, min(60, UPLOAD_TTL_S // 2))


def load_models() -> tuple[AutoPredictor, list[str]]:
    """Every shipped model, loaded once into the router that decides which one judges an image; plus notes
    to show the user.

    A model whose record or weights are missing, truncated or tampered with is left out and the page
    says why; the app still starts with the models that load, and a missing track default's images go to
    the first model that loaded (the router says so in each answer).
    """
    notes, models = [], {}
    repo, revision = hub_settings()
    ckpt = checkpoint_dir(notes)  # the Hub snapshot (DETECTOR_HUB_REPO), or checkpoints/ if that fails
    if repo and ckpt != CHECKPOINT_DIR:
        pin = "" if revision != "main" else (f" (unpinned: set `{HUB_REVISION_ENV}` to a commit so records and "
                                             "weights cannot change under a running Space)")
        notes.append(f"Checkpoints come from the Hugging Face Hub repository `{repo}` at revision `{revision}`{pin}.")
    listed = shipped_models(ckpt)  # the detectors whose record and weights are both there
    backbones = {p.stem for p in ckpt.glob("*.json") if is_backbone(p)}
    others = {p.stem for p in ckpt.glob("*.json")} | {p.stem for p in ckpt.glob("*.safetensors")} | {WILD_MODEL, CIFAKE_MODEL}
    names = listed + sorted(others - set(listed) - backbones)  # tried too, so the page can say what is wrong
    for name in names:
        try:
            models[name] = detector.load(name, notes=notes)
        except (CheckpointError, OSError, ValueError) as e:
            notes.append(f"Model `{name}` could not be loaded and is not offered: {e}")
            log.warning("model %s not loaded: %s", name, e)
    if not models:
        notes.append(f"No model could be loaded from `{ckpt}`: the app cannot judge images. Restore the "
                     f"checkpoints (`git checkout checkpoints/`) or set `{HUB_REPO_ENV}` to a Hub repository "
                     "that holds them.")
    else:
        for track in (WILD_MODEL, CIFAKE_MODEL):
            if track not in models:
                notes.append(f"The track default `{track}` is missing; images it would judge go to "
                             f"`{next(iter(models))}` instead.")
    # The app never loads on demand: a model that failed at start stays out, and its track falls back.
    return AutoPredictor(loaded=models, fallback=next(iter(models), None), load_missing=False), notes


ROUTER, NOTES = load_models()
MODEL_NAMES = list(ROUTER.predictors)
CHOICES = [AUTO, *MODEL_NAMES]  # the dropdowns: auto (by the image) first
DEFAULT = AUTO if MODEL_NAMES else None
PAINTER = StatHistogramPainter(REFERENCE)


def _model(name: str | None, path: str | None = None) -> tuple:
    """(predictor, explainer, reason) from the router: the named model, or under ``auto`` the one it picks."""
    if not MODEL_NAMES:
        raise UserError("No model is loaded; see the note at the top of the page.")
    name = name or DEFAULT
    if name not in CHOICES:
        raise UserError(f"Unknown model {name!r}; choose one of {', '.join(CHOICES)}.")
    pred, reason = ROUTER.pick(path, name)
    return pred, ROUTER.explainer(pred), reason


def _method(name: str | None) -> str:
    name = name or "GradCAM"
    if name not in CAM_METHODS:
        raise UserError(f"Unknown CAM method {name!r}; choose one of {', '.join(CAM_METHODS)}.")
    return name


def _upload(value) -> tuple[str | None, str]:
    """The uploaded file's real path and the name to show, from what an event receives.

    Image events run with ``preprocess=False`` (Gradio's preprocessing opens every upload with PIL before
    the app sees it, so a bad file would get Gradio's wording instead of ours), so nothing upstream has
    checked the payload: a client can send ``{"path": "/any/server/file"}``. Only a file Gradio itself
    received for this app is opened: its real path (symlinks resolved) must lie in Gradio's upload folder,
    checked with Gradio's own ``is_in_or_equal`` as its preprocessing checks an upload. Anything else gets
    the same "not an uploaded file", whether or not the path exists, so the answer tells nothing of the disk.
    """
    if value is None:
        return None, ""
    if isinstance(value, (str, os.PathLike)):
        path, name = value, None
    elif isinstance(value, dict):
        path, name = value.get("path"), value.get("orig_name")
    else:
        path, name = getattr(value, "path", None), getattr(value, "orig_name", None)
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise UserError(f"Expected an uploaded image file. Accepted: {ACCEPTED}.")
    real = os.path.realpath(path)
    if not (gr_utils.is_in_or_equal(real, gr_utils.get_upload_folder()) and os.path.isfile(real)):
        raise UserError(f"Not an uploaded file: send the image itself (uploads are kept {UPLOAD_TTL_S // 60} minutes). "
                        f"Accepted: {ACCEPTED}.")
    return real, str(name or Path(real).name)


def _run(image, model: str | None, method: str | None = None, explain: bool = True) -> Analysis:
    path, shown = _upload(image)
    if path is None:
        raise UserError(f"Drop, paste or upload an image first. Accepted: {ACCEPTED}.")
    try:
        pred, explainer, reason = _model(model, path)
        return analyse(pred, path, explainer if explain else None, _method(method), reason=reason)
    except ImageError as e:
        raise Unreadable(f"{shown}: {e}") from None
    except ExplainError as e:
        raise UserError(str(e)) from None
    finally:
        serving.release_freed_memory()  # the request's tensors are freed: give the pages back


# --- event handlers ---------------------------------------------------------------------------------

def analyse_ui(image, model: str, method: str):
    """The Analyse tab: everything for one image."""
    if image is None:  # the image was cleared
        return [None] * 19
    try:
        a = _run(image, model, method)
    except Unreadable as e:  # the reason goes where the verdict would, and every panel stays empty
        accepted = "" if "accepted" in e.reason.lower() else f"\n\nAccepted: {md(ACCEPTED)}."
        return [f"### Could not read this file\n{md(e.reason)}{accepted}", *[None] * 18]
    heat_pred, label_pred, heat_other, label_other = heatmap_views(a)
    if a.tiles:
        tiles = gr.Image(value=tile_overlay(a.display, a.tiles, a.size),
                         label=f"tile map: P(fake) of {len(a.tiles)} tiles of {a.model_input.shape[0]} px, full "
                               "resolution (blue real, red fake)")
    else:
        tiles = gr.Image(value=None, label="tile map: wild track, images at least twice its input on a side")
    return (
        verdict_markdown(a),
        evidence_markdown(a),
        meter_html(a),
        gr.Image(value=enlarged(a.model_input),
                 label=f"what the model sees: its {a.model_input.shape[0]}x{a.model_input.shape[1]} input"),
        gr.Image(value=a.display, label=f"your image ({a.size[0]}x{a.size[1]})"),
        ("**Note:** " if a.large and not a.wild else "") + a.size_note(),
        gr.Image(value=heat_pred, label=label_pred),
        gr.Image(value=heat_other, label=label_other),
        outline(a.model_input, a.foreground, VIEW),
        tiles,
        gr.Image(value=tile_overlay(a.display, a.residual_tiles, a.size) if a.residual_tiles else None,
                 visible=bool(a.residual_tiles),  # only a model fused with the residual network has one
                 label=f"noise map: P(fake) of {len(a.residual_tiles)} crops of {CROP} px, full resolution"),
        background_markdown(a),
        tile_markdown(a),
        stats_heading(a),
        stats_table(a),
        PAINTER.render(a.stats),
        log_spectrum(a.model_input, 192),
        jpeg_markdown(a),
        a.summary(),
    )


def predict(image, model: str | None = None) -> dict:
    """Judge whether an image is a real photograph or AI-generated; returns P(fake) and the verdict.

    The API's /predict and the MCP tool ``predict``. P(fake) is a calibrated probability; the verdict
    is "uncertain" within 0.15 of the model's threshold. The answer names the model that judged and why.

    Args:
        image: the image file (JPEG, PNG, WebP, BMP, GIF or TIFF; up to 25 MB). A full-size photo or render
            goes to the wild track (CLIP ViT-B/16); a thumbnail to the CIFAKE track (the answer says which and why).
        model: "auto" (default: chosen by the image's size), "wild", "fakespot", "cnn" or "resnet50".

    Returns:
        dict with p_fake (0..1), label ("real"/"fake"), verdict (words), threshold, model, reason, the
        image statistics, for large images the P(fake) of native-resolution tiles, and ``evidence``: the
        provenance findings (C2PA Content Credentials, IPTC/XMP, EXIF, generator text chunks, Stable
        Diffusion watermarks), strongest first, each with its strength and what it does not prove.
    """
    return _run(image, model, explain=False).summary()


def explain(image, model: str | None = None, method: str = "GradCAM", target: str = "predicted"):
    """Show where in an image the detector found evidence: a Grad-CAM heatmap, plus the verdict.

    The API's /explain and the MCP tool ``explain``.

    Args:
        image: the image file (JPEG, PNG, WebP, BMP, GIF or TIFF; up to 25 MB).
        model: "auto" (default: chosen by the image's size), "wild", "fakespot", "cnn" or "resnet50".
        method: GradCAM (default), GradCAM++, HiResCAM, LayerCAM, XGradCAM, EigenCAM or ScoreCAM
            (ScoreCAM only on the small CIFAKE models).
        target: "predicted" (default), "real" or "fake": the class whose evidence the map shows.

    Returns:
        the heatmap laid over the image the model judged, and a dict with the verdict, P(fake), the
        target class and the share of the map that falls on the background.
    """
    if target not in ("predicted", *CLASSES):
        raise UserError(f"target must be 'predicted', 'real' or 'fake', got {target!r}")
    a = _run(image, model, method)
    cls = a.label if target == "predicted" else target
    return overlay(a.model_input, a.heatmaps[cls], VIEW), dict(a.summary(), target=cls)


def batch_ui(files, model: str, progress=gr.Progress()):
    """The Batch tab: many files or zips -> table, summary, CSV and JSON downloads, and the bad files."""
    if not files:
        raise UserError(f"Upload some images or a zip of images first. Accepted: {ACCEPTED}, and .zip.")
    pred = ROUTER if (model or DEFAULT) == AUTO else _model(model)[0]
    uploads = [_upload(f) for f in files]
    paths = [p for p, _ in uploads]
    total = max(count_images(paths), 1)
    rows, errors = [], []
    progress((0, total), desc="analysing", unit="images")
    for r, e, done in batch_rows(pred, paths, dict(uploads), budget=UnpackBudget.for_uploads()):
        rows += r
        errors += e
        progress((min(done, total), total), desc="analysing", unit="images")
    columns = ["file", "p_fake", "verdict", "label", "headline", "model", "evidence", "evidence_strength",
               "evidence_claim", *STATS, "width", "height", "jpeg_quality", "reason"]
    shown = ["file", "p_fake", "verdict", "model", "evidence", "evidence_strength", *STATS, "jpeg_quality"]
    used = ", ".join(f"`{m}` {sum(r['model'] == m for r in rows)}" for m in sorted({r["model"] for r in rows}))
    n_ev = sum(bool(r.get("evidence")) for r in rows)
    verdicts = Counter(r["headline"] for r in rows)  # the verdicts' own words (VERDICT_WORDS), as each model gave them
    said = ", ".join(f"**{n}** {words}" for words, n in verdicts.most_common())
    summary = (f"**{len(rows)} images analysed** ({used or 'none'}): {said or 'none'}; "
               f"**{n_ev} carry provenance evidence** (see the evidence columns); **{len(errors)} {'file' if len(errors) == 1 else 'files'} could not be read**.")
    csv_path, json_path = write_exports(rows, errors, columns, {
        "model": pred.name, "thresholds": {m: p.threshold for m, p in ROUTER.predictors.items()}})
    table = [[round(v, 3) if isinstance(v, float) else v for v in (r.get(c, "") for c in shown)] for r in rows]
    bad = [[e["file"], e["reason"]] for e in errors]
    return (summary, gr.Dataframe(value=table, headers=shown), [str(csv_path), str(json_path)],
            gr.Dataframe(value=bad, headers=["file", "reason"], visible=bool(bad)))


def _cell(m: dict, key: str, fmt: str) -> str:
    v = m.get(key)
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)


def model_tab(name: str):
    """The Models tab for one model: its measured figures and plots, from its checkpoint record. ``auto``
    explains the routing and shows the model that judges most uploads (the wild track's)."""
    intro = ""
    if name == AUTO:
        intro = (f"**auto** picks the model by the image: images at most {CIFAKE_MAX_SIDE} px a side (CIFAKE-sized) go "
                 f"to `{CIFAKE_MODEL}`, everything larger to `{WILD_MODEL}`, whose figures follow.\n\n")
        if WILD_MODEL not in shipped_models():
            return intro, None
        name = WILD_MODEL
    pred = _model(name)[0]
    rec = pred.record
    metrics = rec.metrics
    wild = rec.wild
    rows = ["| evaluated on | images | accuracy | precision | recall | F1 | ROC-AUC | AP | real called real | fakes caught |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    if wild and "cv" in metrics:
        splits = (("test", "every group, out of fold (leave-one-group-out)"),)
    elif wild:
        splits = (("test", "wild test (sources never seen in training)"),
                  ("test_format_controlled", "wild test, format-controlled (512 px, JPEG q90)"))
    else:
        splits = (("test", "CIFAKE test (official)"), ("test_dedup", "CIFAKE test (deduplicated)"),
                  ("validation", "validation (carved from train)"))
    for key, label in splits:
        m = metrics.get(key)
        if m:
            rows.append(f"| {label} | {m.get('n', '')} | {_cell(m, 'accuracy', '.2%')} | {_cell(m, 'precision', '.4f')} | "
                        f"{_cell(m, 'recall', '.4f')} | {_cell(m, 'f1', '.4f')} | {_cell(m, 'roc_auc', '.4f')} | "
                        f"{_cell(m, 'average_precision', '.4f')} | {_cell(m, 'real_accuracy', '.2%')} | "
                        f"{_cell(m, 'fake_accuracy', '.2%')} |")
    seconds = rec.train_seconds
    info = (f"**`{pred.name}`** ({rec.arch}" + (f", {rec.parameters:,} parameters" if rec.parameters else "")
            + (f", trained {seconds / 60:.0f} min on a 2-core CPU" + (" from cached backbone features" if wild else "")
               if seconds else "") +
            f"); threshold {pred.threshold:.2f}, temperature {pred.temperature:.2f}.")
    if wild:
        arithmetic = ("int8 arithmetic by ONNX Runtime; Grad-CAM explains a float32 copy" if pred.precision == "int8"
                      else "float32 arithmetic")
        info += (f" Backbone: OpenAI CLIP ViT-B/16 (frozen, imported from `{rec.backbone['name']}`, run in {arithmetic}); head: "
                 f"{rec.arch_kwargs['head']['kind']} on {rec.arch_kwargs['head']['layers'] or 'the embedding only'}"
                 + (f"; fused with `{rec.fusion['residual']}`, a small network on native-resolution noise "
                    "residuals" if rec.fusion else "") + ". Peers and more figures: README, *Wild track*.")
    table = "\n".join(rows)
    cv = metrics.get("cv")
    if cv:
        table += ("\n\n**Each group held out in turn** (the model never saw its sources): ROC-AUC within the group, or "
                  "against the other class of every other group when it holds one class; at the threshold, the share "
                  "of its real photos called real and of its fakes caught.\n\n"
                  "| held-out group | real | fake | ROC-AUC | real called real | fakes caught |\n|---|---|---|---|---|---|\n"
                  + "\n".join(f"| {g} | {r['n_real']} | {r['n_fake']} | {r['auc']:.3f} | {_cell(r, 'real_called_real', '.1%')} | "
                              f"{_cell(r, 'fakes_caught', '.1%')} |" for g, r in cv["groups"].items()))
    test = metrics.get("test")
    title = (f"{pred.name}: every group out of fold (leave-one-group-out)" if cv else
             f"{pred.name} on the {'wild' if wild else 'CIFAKE'} test split")
    plot = figure_to_array(model_report(test, title)) if test and "confusion_matrix" in test else None
    return intro + info + "\n\n" + table, plot


GUIDE_TEMPLATE = """
### How to read the results

**Two tracks, one number.** Every model answers with P(fake), its probability that the image was made by
an AI generator. With the model set to **auto** (the default) the image's size picks the model, and the
verdict says which one judged and why:

{wild}
- **CIFAKE** (`fakespot`, `cnn`, `resnet50`; images at most {cifake_side} px a side): trained from scratch on CIFAKE,
  32x32 CIFAR-10 photos against Stable Diffusion 1.4. About 98% right on CIFAKE-style thumbnails, and at
  chance on full-size photos: choose one by hand only to study it.

Near the threshold the page says *uncertain*: treat those as a coin toss. No verdict here is proof, and
an image can be both real and edited.

**Evidence beyond the classifier** (shown first when found). Many files say where they came from:
signed **Content Credentials** (C2PA; ChatGPT/DALL-E 3, Adobe Firefly, Microsoft, Google and Meta tools and
some cameras sign them), an IPTC *DigitalSourceType* such as `trainedAlgorithmicMedia`, the prompt and
sampler that Stable Diffusion front ends (AUTOMATIC1111, Forge, ComfyUI, NovelAI, InvokeAI) write into the
file, camera EXIF, or the invisible watermark that Stable Diffusion's reference code embeds. Each finding
says how strong it is: *cryptographically verified* (a valid signature from a certificate on the trust
list, bound to these exact pixels), *declared in metadata* (easily stripped or forged) or *heuristic* (a
statistical signal). Evidence is never blended into P(fake); and its absence proves nothing, since most
sites strip metadata on upload.

**The heatmap** (Grad-CAM and relatives, from pytorch-grad-cam) colours the regions whose features moved
the model's score toward a class: red is strong, blue is none. For the wild model it is computed on the
ViT's 14x14 grid of 16-pixel patches of the 224x224 input; for the CIFAKE models on 2x2 to 4x4 feature
grids smoothed to 32x32. Methods can disagree; a map shows what the model used, not where an artefact
truly is. The *background share* is how much of a map's energy falls outside the main object (found
automatically with GrabCut, outlined in cyan); compare it with the background's share of the image,
which is what an evenly spread map would score.

**The tile map** (wild track, images at least {tile_min} px on their longer side and {tile} px on the
shorter) cuts up to {tiles} {tile}x{tile} tiles from your image at its own resolution, around its centre when
they cannot cover it all, and judges each: fine generator texture that resizing would blur away is still there. A tile that disagrees with the whole image is worth a closer look; a tile also sees
less context than the whole, so it errs more often.

**The statistics** (blur, sharpness, noise, spectrum) are measured on the model's input and placed against
CIFAKE's 32x32 real (blue) and fake (red) training images. They describe CIFAKE, so for full-size images
read the values, not the leaning. Resizing, blurring and JPEG compression move all of them. The log spectrum's
centre holds the low frequencies; bright dots or lines away from it are periodic patterns, which up-sampling
in a generator can leave.
"""


def guide(records: dict[str, Record]) -> str:
    """The guide, with every figure read from the shipped records (so it cannot drift from the models)."""
    rec = records.get(WILD_MODEL)
    if rec is None:
        wild = f"- **wild** (anything larger than {CIFAKE_MAX_SIDE} px a side): not loaded here."
    else:
        data = (rec.data or {}).get("train", {})
        test = rec.metrics.get("test", {})
        fused = " and a small network on the noise of native-resolution crops" if rec.fusion else ""
        cv = rec.metrics.get("cv", {})
        how = ("with each group of sources held out in turn" if cv
               else "on sources it never saw")
        wild = (f"- **wild** (anything larger than {CIFAKE_MAX_SIDE} px a side): OpenAI's CLIP ViT-B/16, frozen, with a "
                f"small head{fused}, trained on {data.get('real', 0) + data.get('fake', 0):,} real-world photographs and AI "
                f"images from {len(data.get('sources', []))} public sources. It judges the centre square of your image "
                f"resized to {rec.input_size}x{rec.input_size}. Measured {how} (README, *Wild track*), at its "
                f"threshold it called {test.get('real_accuracy', float('nan')):.1%} of real photos real and caught "
                f"{test.get('fake_accuracy', float('nan')):.1%} of AI images (ROC-AUC {test.get('roc_auc', float('nan')):.2f}"
                + (f" pooled, {cv['mean_auc']:.2f} on average over the held-out groups" if "mean_auc" in cv else "")
                + "): "
                "photoreal renders and faces most often pass as real. So a *fake* verdict is a strong hint; a *real* "
                "verdict means only that it found no sign of generation.")
    size = rec.input_size if rec is not None else 224
    return GUIDE_TEMPLATE.format(wild=wild, cifake_side=CIFAKE_MAX_SIDE, tile=size, tile_min=2 * size, tiles=TILES)


CAPTIONED = ["captioned"]  # output images whose caption floats over their top edge
# The caption of an output image floats over the image's top edge, where figures have their titles: it keeps
# clear of the buttons at the top right, wraps, and the image starts below it (two lines on a phone). On a
# phone, a Markdown table wider than the screen scrolls sideways.
CSS = """
.captioned label[data-testid="block-label"] { max-width: calc(100% - 110px); white-space: normal; }
.captioned .image-container { padding-top: 30px; box-sizing: border-box; }
@media (max-width: 640px) {
  .captioned .image-container { padding-top: 48px; }
  .prose table { display: block; overflow-x: auto; }  /* wide tables scroll instead of one letter per line */
  .prose th, .prose td { white-space: nowrap; }
}
"""
# A refused upload (not an image) would show the browser's broken-image icon in the upload box; the reason is
# shown where the verdict goes, so the box is left blank instead.
HEAD = """<script>
for (const [kind, shown] of [["error", "hidden"], ["load", ""]]) {
  document.addEventListener(kind, (e) => {
    if (e.target.tagName === "IMG" && e.target.closest("#upload")) e.target.style.visibility = shown;
  }, true);
}
</script>"""


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="fakespot: real or AI-generated?", delete_cache=(UPLOAD_SWEEP_S, UPLOAD_TTL_S)) as demo:
        gr.Markdown("# fakespot: real photograph or AI-generated?\nDrop in an image to get the probability "
                    "that it was generated by AI, a heatmap of the regions that drove the decision, a tile map of "
                    "where it looks generated, and its sharpness and noise. Photos and renders are judged by the "
                    "wild track (CLIP ViT-B/16 trained on real-world images); 32x32 thumbnails by the CIFAKE track. "
                    "Content Credentials (C2PA), metadata, generation parameters and invisible watermarks are "
                    "shown beside the verdict as evidence. A verdict is evidence, not proof: see *How to read this*.")
        for note in NOTES:
            gr.Markdown(f"> **Note:** {note}")
        with gr.Tab("Analyse"):
            with gr.Row():
                with gr.Column(scale=2):
                    image = gr.Image(type="filepath", image_mode=None, label="image (drop, paste or upload)",
                                     sources=["upload", "clipboard"], height=280, elem_id="upload")
                    model = gr.Dropdown(CHOICES, value=DEFAULT, label="model")
                    method = gr.Dropdown(list(CAM_METHODS), value="GradCAM", label="explanation method",
                                         info="ScoreCAM runs one forward pass per feature channel: offered only "
                                              "where that takes seconds (not on resnet50 or wild)")
                    button = gr.Button("Analyse", variant="primary")
                    examples = sorted((p for p in EXAMPLES.glob("*.jpg")), key=lambda p: (not p.name.startswith("wild_"), p.name))
                    gr.Examples([[str(p)] for p in examples if p.is_file()], inputs=[image],
                                label="examples: photos and AI renders at full size (wild_*), a full-size photo, and CIFAKE "
                                      "32x32 test images (real_*, fake_*); sources in assets/examples/SOURCES.md")
                with gr.Column(scale=3):
                    verdict = gr.Markdown("Drop an image to start.", elem_id="verdict")
                    probs = gr.HTML(elem_id="pmeter")  # the same verdict, drawn on the P(fake) scale
                    evidence = gr.Markdown(elem_id="evidence")
                    with gr.Row():
                        seen = gr.Image(label="what the model sees", height=VIEW, interactive=False, format="png", elem_classes=CAPTIONED)
                        original = gr.Image(label="your image", height=VIEW, interactive=False, elem_classes=CAPTIONED)
                    size_note = gr.Markdown()
            with gr.Row():
                heat_pred = gr.Image(label="heatmap: predicted class", height=VIEW, interactive=False, format="png",
                                     elem_id="heatmap", elem_classes=CAPTIONED)
                heat_other = gr.Image(label="heatmap: other class", height=VIEW, interactive=False, format="png", elem_classes=CAPTIONED)
                objmask = gr.Image(label="object found (GrabCut), the rest is background", height=VIEW,
                                   interactive=False, format="png", elem_classes=CAPTIONED)
            with gr.Row():
                tilemap = gr.Image(label="tile map (wild track)", height=VIEW + 64, interactive=False, format="png", elem_classes=CAPTIONED)
                noisemap = gr.Image(label="noise map", height=VIEW + 64, interactive=False, format="png", visible=False, elem_classes=CAPTIONED)
                with gr.Column():
                    background = gr.Markdown()
                    tile_note = gr.Markdown()
            stats_head = gr.Markdown("### Blur, sharpness and noise against CIFAKE's real and fake training images")
            stats = gr.Dataframe(headers=STATS_HEADERS, interactive=False, wrap=True, column_widths=STATS_WIDTHS)
            with gr.Row():
                hist = gr.Image(label="distributions (blue real, red fake) and this image", interactive=False,
                                format="png", scale=4, elem_classes=CAPTIONED)
                spectrum = gr.Image(label="log spectrum", interactive=False,
                                    format="png", scale=1, elem_classes=CAPTIONED)
            jpeg = gr.Markdown()
            with gr.Accordion("JSON (what /predict and /explain return)", open=False):
                raw = gr.JSON()
            outputs = [verdict, evidence, probs, seen, original, size_note, heat_pred, heat_other, objmask, tilemap, noisemap,
                       background, tile_note, stats_head, stats, hist, spectrum, jpeg, raw]
            gr.on([image.change, model.change, method.change, button.click], analyse_ui, [image, model, method],
                  outputs, api_name="analyse", api_visibility="undocumented", preprocess=False, concurrency_id="model")

        with gr.Tab("Batch"):
            gr.Markdown("Many images at once, or zips of images (folders inside zips are searched). Files that "
                        "cannot be read are listed with the reason; the rest are analysed.")
            with gr.Row():
                files = gr.File(file_count="multiple", label="images or zips", height=300)
                with gr.Column():
                    batch_model = gr.Dropdown(CHOICES, value=DEFAULT, label="model")
                    batch_button = gr.Button("Analyse all", variant="primary")
            batch_summary = gr.Markdown()
            batch_table = gr.Dataframe(label="results (click a column header to sort)", interactive=False)
            downloads = gr.File(label="downloads: CSV and JSON", file_count="multiple", interactive=False)
            batch_errors = gr.Dataframe(label="files that could not be read", headers=["file", "reason"],
                                        interactive=False, wrap=True, column_widths=["30%", "70%"], visible=False)
            # Undocumented: callable, but not an MCP tool (its file list and progress do not fit a tool's schema).
            batch_button.click(batch_ui, [files, batch_model], [batch_summary, batch_table, downloads, batch_errors],
                               api_name="batch", api_visibility="undocumented", concurrency_limit=1,
                               show_progress_on=batch_table)  # one progress bar, not one per output

        with gr.Tab("Models"):
            chosen = gr.Dropdown(CHOICES, value=DEFAULT, label="model")
            first = model_tab(DEFAULT) if DEFAULT else ("", None)
            model_info = gr.Markdown(first[0])
            model_plot = gr.Image(value=first[1], label="held-out evaluation: confusion matrix, ROC and precision-recall",
                                  interactive=False, format="png", elem_classes=CAPTIONED)
            chosen.change(model_tab, chosen, [model_info, model_plot], api_visibility="private")

        with gr.Tab("How to read this"):
            gr.Markdown(guide({n: p.record for n, p in ROUTER.predictors.items()}))

        # API-only endpoints (gradio_client): hidden inputs and outputs, documented on the API page.
        with gr.Row(visible=False):
            api_image = gr.Image(type="filepath", image_mode=None)
            api_model = gr.Dropdown(CHOICES, value=DEFAULT)
            api_method = gr.Dropdown(list(CAM_METHODS), value="GradCAM")
            api_target = gr.Dropdown(["predicted", *CLASSES], value="predicted")
            api_json, api_heat, api_heat_json = gr.JSON(), gr.Image(format="png"), gr.JSON()
            api_predict, api_explain = gr.Button(), gr.Button()
        # One concurrency group for every request that runs a model: at most CONCURRENCY at once in all.
        api_predict.click(predict, [api_image, api_model], api_json, api_name="predict", preprocess=False,
                          concurrency_id="model")
        api_explain.click(explain, [api_image, api_model, api_method, api_target], [api_heat, api_heat_json],
                          api_name="explain", preprocess=False, concurrency_id="model")
    return demo


demo = build_demo()


def mcp_enabled() -> bool:
    """Serve the API as an MCP server too (tools ``predict`` and ``explain`` at /gradio_api/mcp/sse) when the
    ``gradio[mcp]`` extra is installed, unless GRADIO_MCP_SERVER=False."""
    if os.environ.get("GRADIO_MCP_SERVER", "").lower() in ("false", "0", "no"):
        return False
    try:
        import mcp  # noqa: F401  (the extra's package)
    except ImportError:
        return False
    return True


def launch(**kwargs):
    """Queue and launch with the app's limits (tests pass prevent_thread_lock=True and a port)."""
    demo.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    kwargs = {"max_file_size": MAX_FILE_SIZE, "show_error": True, "mcp_server": mcp_enabled(), "css": CSS,
              "head": HEAD, **kwargs}
    return demo.launch(**kwargs)


if __name__ == "__main__":
    launch()
