"""What the page shows of an ``Analysis``: Markdown, HTML and tables, built from data alone.

Kept apart from ``app.py`` (layout and launch) so tests can import it without loading a model. Every string
that comes from a file or a client (metadata, a signer's name, a parser's message) goes through ``md``.
"""

from __future__ import annotations

import html
import re

import numpy as np

from detector.analysis import Analysis
from detector.explain import CLASS_AGNOSTIC, overlay
from detector.preprocess import CLASSES
from detector.provenance import leads
from detector.stats import STATS, Reference

VIEW = 256  # side of the enlarged model-input views
REFERENCE = Reference.load()
CIFAKE_JPEG_QUALITY = sorted({q for c in REFERENCE.summary.get("jpeg_quality", {}).values() for q in c})


# What can make Markdown of plain text: emphasis, code, links and images ([, ], !), tables, strike-through.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]!|~])")


def md(text) -> str:
    """Text from a file (metadata, a signer's name, a parser's message) as literal Markdown: Markdown's
    punctuation backslash-escaped and HTML's escaped, so it can neither link, embed nor add markup."""
    return html.escape(_MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " "), quote=False)


def verdict_markdown(a: Analysis) -> str:
    """The verdict: the strongest provenance finding first when there is one, the classifier's P(fake) beside it."""
    v = a.judgement
    head = v.headline
    lo, hi = v.band
    caveat = f" {v.caveat}" if v.caveat else ""
    classifier = (f"**P(fake) = {a.p_fake:.3f}** · decision threshold {a.threshold:.2f} · "
                  f"uncertain between {lo:.2f} and {hi:.2f} · model `{a.model}`{caveat}\n\n*Why this model:* {a.reason}.")
    top = a.evidence.strongest if a.evidence else None
    if top is None:
        return f"## {head}\n{classifier}"
    if leads(top):
        return (f"## {md(top.title)}\n*{STRENGTH_WORDS[top.strength]}; see Evidence below.*\n\n"
                f"**The classifier, separately: {head[0].lower() + head[1:]}.** {classifier}")
    return (f"## {head}\n**Evidence first:** {md(top.title)} (*{STRENGTH_WORDS[top.strength].lower()}*; see Evidence "
            f"below).\n\n{classifier}")


VERDICT_COLOURS = {"real": "#2b6cb0", "uncertain": "#b7791f", "fake": "#c53030"}


def meter_html(a: Analysis) -> str:
    """P(fake) on a 0-1 scale with the model's threshold and uncertain band marked, in the verdict's colour: the
    same verdict as the headline, drawn (numbers only, no user text)."""
    v = a.judgement
    lo, hi = (100 * x for x in v.band)
    colour = VERDICT_COLOURS[v.key]
    return (f'<div class="pmeter" aria-label="P(fake) {a.p_fake:.2f}, verdict {v.key}">'
            f'<div style="display:flex;justify-content:space-between;font-size:0.9em"><span>real 0</span>'
            f'<b style="color:{colour}">P(fake) {a.p_fake:.2f} · {html.escape(v.key)}</b><span>1 fake</span></div>'
            f'<div style="position:relative;height:14px;border-radius:7px;background:linear-gradient(90deg,#bee3f8,#fed7d7)">'
            f'<div title="uncertain band" style="position:absolute;left:{lo:.1f}%;width:{hi - lo:.1f}%;top:0;bottom:0;'
            f'background:repeating-linear-gradient(45deg,#f6e05e88 0 4px,transparent 4px 8px)"></div>'
            f'<div title="threshold" style="position:absolute;left:{100 * v.threshold:.1f}%;top:-3px;bottom:-3px;'
            f'width:2px;background:#2d3748"></div>'
            f'<div style="position:absolute;left:calc({100 * a.p_fake:.1f}% - 7px);top:0;width:14px;height:14px;'
            f'border-radius:7px;background:{colour};border:2px solid white;box-sizing:border-box"></div></div>'
            f'<div style="font-size:0.8em;opacity:0.8">threshold {v.threshold:.2f} (dark line) · uncertain between '
            f'{v.band[0]:.2f} and {v.band[1]:.2f} (hatched)</div></div>')


STRENGTH_WORDS = {"verified": "Cryptographically verified", "declared": "Declared in the file's metadata",
                  "heuristic": "A statistical (heuristic) signal"}


def evidence_markdown(a: Analysis) -> str:
    """The Evidence panel: every finding with its strength and limits, then what was skipped, and the trust list."""
    ev = a.evidence
    if ev is None:
        return ""
    lines = ["### Evidence beyond the classifier"]
    if not ev.findings:
        lines.append(md(ev.headline()))
    for f in ev.ranked():
        lines.append(f"- **{md(f.title)}.** *{STRENGTH_WORDS[f.strength]}.* Proves: {md(f.proves)} Does not prove: "
                     f"{md(f.does_not_prove)}")
    if ev.notes:
        lines.append("\n**Checked, nothing to show, or skipped:** " + " · ".join(map(md, ev.notes)))
    lines.append(f"\n<sub>Content Credentials checked with c2pa-python against {md(ev.trust)}. Evidence took "
                 f"{ev.seconds * 1000:.0f} ms. It is never blended into P(fake).</sub>")
    return "\n".join(lines)


def enlarged(image: np.ndarray) -> np.ndarray:
    """A model input shown about VIEW pixels wide, each pixel a block (no smoothing invents detail)."""
    k = max(1, VIEW // image.shape[0])
    return np.kron(image, np.ones((k, k, 1), np.uint8))


def heatmap_views(a: Analysis) -> tuple[np.ndarray, str, np.ndarray, str]:
    other = CLASSES[1 - CLASSES.index(a.label)]
    views = []
    flat = float(a.model_input.reshape(-1, 3).std(0).max()) < 1.0  # one colour (a 1x1 image, a blank frame): no region can differ
    for cls, role in ((a.label, "predicted"), (other, "other")):
        cam = a.heatmaps[cls]
        label = f"{a.method}: toward '{cls}' ({role} class)"
        if flat:
            views += [enlarged(a.model_input), f"{a.method}: nothing to show, the image is one flat colour"]
            continue
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


def tile_markdown(a: Analysis) -> str:
    if not a.tiles:
        return ""
    p = [t["p_fake"] for t in a.tiles]
    return (f"**Tile map.** {len(p)} tiles of {a.model_input.shape[0]}x{a.model_input.shape[0]} pixels, judged at full "
            f"resolution: P(fake) from {min(p):.2f} to {max(p):.2f} (whole image {a.p_fake:.2f}). Tiles that disagree "
            "with the whole image point at regions worth a closer look; a tile sees less context than the whole.")


def stats_heading(a: Analysis) -> str:
    if a.wild:
        side = a.model_input.shape[0]
        return (f"### Blur, sharpness and noise\nMeasured on the model's {side}x{side} input and placed against "
                "CIFAKE's 32x32 training images, which do not describe full-size photos: read the values, not the leaning.")
    return "### Blur, sharpness and noise against CIFAKE's real and fake training images"


def stats_table(a: Analysis) -> list[list]:
    rows = []
    for name, (label, meaning) in STATS.items():
        v = a.stats[name]
        s = REFERENCE.stats[name]
        rows.append([label, round(v, 4), round(s["real"]["median"], 4), round(s["fake"]["median"], 4),
                     round(REFERENCE.percentile(name, "real", v), 1), round(REFERENCE.percentile(name, "fake", v), 1),
                     REFERENCE.leaning(name, v), meaning])
    return rows


STATS_HEADERS = ["statistic", "this image", "real median", "fake median", "pct. real", "pct. fake", "reading",
                 "meaning"]  # pct.: this image's percentile among CIFAKE's real / fake training images
STATS_WIDTHS = ["17%", "10%", "9%", "9%", "7%", "7%", "14%", "27%"]  # the meaning gets room to wrap, nothing is cut


def jpeg_markdown(a: Analysis) -> str:
    if a.wild:
        if a.jpeg_quality is None:
            return f"The file is {a.format or 'an image'}, not a JPEG."
        return (f"The file is a JPEG of estimated quality **{a.jpeg_quality}** (libjpeg scale). The wild model was "
                "trained with both classes re-encoded at random JPEG qualities, so the format should not sway it; "
                "a low quality means the image was recompressed, which hides the fine detail it reads.")
    cifake = "/".join(CIFAKE_JPEG_QUALITY) or "?"
    if a.jpeg_quality is None:
        return f"The file is {a.format or 'an image'}, not a JPEG. (Every CIFAKE image is a JPEG of quality {cifake}.)"
    return (f"The file is a JPEG of estimated quality **{a.jpeg_quality}** (libjpeg scale). Every CIFAKE image, real "
            f"and fake, is a JPEG of quality {cifake}, so quality alone says nothing about the class; a very "
            "different quality means the image has been through another encoder.")
