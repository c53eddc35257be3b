"""Evidence beyond the classifier: Content Credentials (C2PA), metadata, generation parameters and
invisible watermarks, read from the file a user uploads.

``gather(src)`` returns an :class:`Evidence`: structured findings, each with its strength and what it
does and does not prove, plus notes on what was skipped and why. It never raises on a hostile file:
every reader runs inside a size, time and error bound, and a failure becomes a note.

Strengths, strongest first:

- ``verified``: a C2PA manifest whose signature chains to the trust list and whose hashes match the
  pixels. Cryptographic: the signer made this claim about these bytes.
- ``declared``: what metadata says (IPTC DigitalSourceType, generator text chunks, camera EXIF, a C2PA
  manifest that is intact but signed by an untrusted certificate, or one whose hashes no longer match).
  Trivially stripped, and can be forged.
- ``heuristic``: a statistical signal (the Stable Diffusion watermarks' bit agreement). A public
  pattern, so anyone can embed it; resizing and JPEG remove it.

No finding is blended into P(fake): the classifier's answer stays beside the evidence.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import logging
import math
import os
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, IptcImagePlugin

log = logging.getLogger(__name__)

STRENGTHS = ("verified", "declared", "heuristic")
MAX_BYTES = 64 * 1024 * 1024  # files larger than this get no evidence (the app accepts 25 MB)
MAX_XMP_BYTES = 1024 * 1024  # larger XMP packets are skipped, not parsed
MAX_TEXT_VALUE = 8 * 1024 * 1024  # longer text values (PNG chunks, EXIF UserComment) are cut before parsing
MAX_SETTINGS_LINE = 8 * 1024  # A1111's "Steps: ..., Sampler: ..." line is read up to this length
TIMEOUT_ENV = "DETECTOR_C2PA_TIMEOUT"


def _timeout_from_env(default: float = 3.0) -> float:
    """Seconds from DETECTOR_C2PA_TIMEOUT; a value that is not a positive number is refused with a warning."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else default
        if value > 0 and math.isfinite(value):
            return value
    except ValueError:
        pass
    log.warning("%s=%r is not a positive number of seconds; using %g", TIMEOUT_ENV, raw, default)
    return default


C2PA_TIMEOUT_S = _timeout_from_env()
EVIDENCE_TIMEOUT_S = C2PA_TIMEOUT_S + 2  # what a request waits for the whole evidence before going on without it
TRUST_ENV = "DETECTOR_C2PA_TRUST_ANCHORS"  # a PEM file of extra trust anchors (e.g. the C2PA trust list)
WATERMARK_PIXELS = 65_536  # smaller images are not checked (invisible-watermark's own minimum)
WATERMARK_BLOCKS = 4_096  # 4x4 blocks of the LL band read at most (a 512x512 image has this many)
WATERMARK_BLOCK, WATERMARK_SCALES = 4, [0, 36, 36]  # invisible-watermark's dwtDct defaults
WATERMARK_CHANCE = 1e-6  # a pattern counts as found when agreement this high has less chance than this

IPTC_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/"
# IPTC DigitalSourceType codes -> what the image is said to be
SOURCE_TYPES = {
    "trainedAlgorithmicMedia": ("ai-generated", "created by a generative AI model"),
    "compositeWithTrainedAlgorithmicMedia": ("ai-edited", "a composite that includes generative AI elements"),
    "algorithmicallyEnhanced": ("edited", "enhanced by an algorithm"),
    "algorithmicMedia": ("synthetic", "created by an algorithm (not a trained model)"),
    "compositeSynthetic": ("ai-edited", "a composite with synthetic elements"),
    "digitalCapture": ("camera", "captured by a digital camera"),
    "computationalCapture": ("camera", "a computational camera capture"),
    "negativeFilm": ("camera", "scanned from a film negative"),
    "positiveFilm": ("camera", "scanned from film"),
    "print": ("camera", "scanned from a print"),
    "minorHumanEdits": ("edited", "a capture with minor human edits"),
    "humanEdits": ("edited", "edited by a person"),
    "compositeCapture": ("edited", "a composite of captures"),
    "composite": ("edited", "a composite"),
    "digitalArt": ("human-made", "digital art made by a person"),
    "virtualRecording": ("synthetic", "a recording of a virtual (rendered) scene"),
    "screenCapture": ("edited", "a screen capture"),
    "dataDrivenMedia": ("human-made", "a visualisation of data"),
}
AI_CLAIMS = ("ai-generated", "ai-edited")  # what the headline and the ranking favour
# C2PA validation codes (c2pa-rs) that say the pixels no longer match what was signed
PIXEL_HASH_FAILURES = ("assertion.dataHash.mismatch", "assertion.boxesHash.mismatch", "assertion.bmffHash.mismatch",
                       "assertion.collectionHash.mismatch")
CREDENTIAL_FAILURES = {"signingCredential.untrusted": "certificate not on the trust list",
                       "signingCredential.expired": "certificate expired",
                       "signingCredential.revoked": "certificate revoked",
                       "signingCredential.invalid": "certificate invalid"}
# Software names that AI generators and front ends write into Software, CreatorTool, Credit, ...
AI_SOFTWARE = re.compile(
    r"midjourney|dall[-·\s]?e|openai|chatgpt|stable\s*diffusion|sdxl|comfyui|automatic1111|forge|novelai|invokeai|"
    r"fooocus|firefly|imagen|gemini|made with google ai|flux|black forest|leonardo|ideogram|draw things|"
    r"runway|bing image creator|designer|dreamstudio|nightcafe|stability ai|swarmui|krea|recraft|"
    r"generated (?:with|by) ai|ai[- ]generated", re.IGNORECASE)
CAMERA_EXIF = ("Make", "Model", "LensModel", "ExposureTime", "FNumber", "ISOSpeedRatings", "FocalLength",
               "DateTimeOriginal")
# Stable Diffusion's invisible watermarks (invisible-watermark, method dwtDct): what the reference
# scripts and the SDXL pipelines embed.
WATERMARKS = {
    "Stable Diffusion 1.x reference scripts": np.unpackbits(np.frombuffer(b"StableDiffusionV1", np.uint8)),
    "Stable Diffusion 2.x reference scripts": np.unpackbits(np.frombuffer(b"SDV2", np.uint8)),
    "SDXL (Stability AI and diffusers pipelines)": np.array(
        [int(b) for b in bin(0b101100111110110010010000011110111011000110011110)[2:]], np.uint8),
}
LIMITS = {
    "c2pa-trusted": "Metadata can be stripped: an image without Content Credentials proves nothing, and the "
                    "credentials say who signed, not whether the signer told the truth.",
    "c2pa-untrusted": "The signing certificate is not on the trust list: anyone can make a certificate with "
                      "any name, so who signed is not established.",
    "c2pa-credential": "The signing certificate had expired or was revoked when checked: the signature no longer "
                       "vouches for who signed.",
    "c2pa-tampered": "The image changed after it was signed, so the claim no longer describes these pixels.",
    "c2pa-broken": "The signature or the manifest's own hashes do not verify: who made the claim, and whether it "
                   "was altered, is unknown.",
    "metadata": "Metadata is trivially stripped, edited or copied from another file; absence proves nothing.",
    "camera": "Camera EXIF can be copied into a generated image; it says which device wrote the file, not "
              "that the scene was photographed.",
    "watermark": "A public pattern: anyone can embed it, and resizing, cropping or JPEG compression removes it.",
}


@dataclass
class Finding:
    """One piece of evidence. ``claim``: ai-generated, ai-edited, synthetic, camera, edited, human-made, unknown."""

    source: str  # c2pa, xmp, iptc, exif, png-text, watermark
    strength: str  # verified, declared, heuristic (see STRENGTHS)
    claim: str
    title: str  # one sentence for a person
    proves: str
    does_not_prove: str
    details: dict = field(default_factory=dict)


@dataclass
class Evidence:
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was skipped or unreadable, and why
    trust: str = ""  # the trust list used for C2PA
    seconds: float = 0.0

    def ranked(self) -> list[Finding]:
        """Strongest first; among equals, intact before broken (a tampered manifest), then claims of AI."""
        return sorted(self.findings, key=lambda f: (STRENGTHS.index(f.strength), not f.details.get("intact", True),
                                                    f.claim not in AI_CLAIMS))

    @property
    def strongest(self) -> Finding | None:
        r = self.ranked()
        return r[0] if r else None

    def headline(self) -> str:
        top = self.strongest
        if top is None:
            return ("No Content Credentials, generation metadata or known watermark found (absence proves "
                    "nothing: most sites strip metadata).")
        return top.title

    def to_dict(self) -> dict:
        top = self.strongest
        return {"headline": self.headline(), "strongest": top.strength if top else None,
                "claim": top.claim if top else None,
                "findings": [asdict(f) for f in self.ranked()], "notes": list(self.notes),
                "trust": self.trust, "ms": round(self.seconds * 1000, 1)}


def leads(f: "Finding") -> bool:
    """Whether a finding replaces the classifier's verdict as the headline: a verified signature, or intact
    evidence of AI. Metadata is forged to hide AI far more than to claim it, so a copied camera EXIF or a
    broken manifest is stated first but under the classifier's headline."""
    return f.details.get("intact", True) and (f.strength == "verified" or f.claim in AI_CLAIMS)


# --- entry point ---------------------------------------------------------------------------------------

def gather(src: str | os.PathLike | bytes, c2pa_timeout: float = C2PA_TIMEOUT_S,
           trust_pem: str | None = None, watermarks: bool = True) -> Evidence:
    """Every piece of provenance evidence in one image file (a path or its bytes). Never raises for
    what the file holds; unreadable parts become notes."""
    t0 = time.perf_counter()
    ev = Evidence(trust=trust_description(trust_pem))
    try:
        data = _read(src)
    except OSError as e:
        ev.notes.append(f"file could not be read for evidence ({e})")
        return _done(ev, t0)
    if data is None:
        ev.notes.append(f"file larger than {MAX_BYTES // 2**20} MB: no evidence read")
        return _done(ev, t0)
    for reader in (lambda: read_c2pa(data, ev, c2pa_timeout, trust_pem), lambda: read_metadata(data, ev, watermarks)):
        try:
            reader()
        except Exception as e:  # noqa: BLE001 (a reader bug or a library surprise must not cost the verdict)
            ev.notes.append(f"evidence reader failed ({type(e).__name__}: {e}); the rest is shown")
    return _done(ev, t0)


_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="evidence")


def submit(src: str | os.PathLike | bytes) -> concurrent.futures.Future:
    """Start :func:`gather` in a worker thread (the app reads the evidence while its model runs)."""
    return _POOL.submit(gather, src)


def result(future: concurrent.futures.Future, timeout: float = EVIDENCE_TIMEOUT_S) -> Evidence:
    """The evidence of a :func:`submit`, or, past ``timeout`` seconds, an empty one that says so: a file that
    makes a reader slow costs its evidence, never the verdict."""
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        return Evidence(notes=[f"evidence not read: it took longer than {timeout:g} s"], trust=trust_description(),
                        seconds=timeout)


def gather_within(src: str | os.PathLike | bytes, timeout: float = EVIDENCE_TIMEOUT_S) -> Evidence:
    """:func:`gather` with a bound on the wait (the CLI and the Batch tab)."""
    return result(submit(src), timeout)


def _done(ev: Evidence, t0: float) -> Evidence:
    ev.seconds = time.perf_counter() - t0
    return ev


def _read(src) -> bytes | None:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src) if len(src) <= MAX_BYTES else None
    if os.path.getsize(src) > MAX_BYTES:
        return None
    return Path(src).read_bytes()


# --- C2PA -------------------------------------------------------------------------------------------

_C2PA_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="c2pa")


def trust_anchors(trust_pem: str | None = None) -> str | None:
    """Extra trust anchors (PEM text): the argument, else the file named by DETECTOR_C2PA_TRUST_ANCHORS."""
    if trust_pem:
        return trust_pem
    path = os.environ.get(TRUST_ENV)
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace") if path and Path(path).is_file() else None
    except OSError:  # unreadable: trust_description says no anchors were added
        return None


def trust_description(trust_pem: str | None = None) -> str:
    """Which trust list C2PA signatures are checked against, in words."""
    try:
        from importlib.metadata import version

        base = f"the built-in trust anchors of c2pa-python {version('c2pa-python')}"
    except Exception:  # noqa: BLE001 (not installed: read_c2pa says so)
        return "none: c2pa-python is not installed"
    extra = trust_anchors(trust_pem)
    path = os.environ.get(TRUST_ENV)
    if not extra and path:
        return base + f" only: {TRUST_ENV}={path} is not a readable file, so no anchors were added"
    if not extra:
        return base + f" (set {TRUST_ENV} to a PEM file, e.g. the C2PA trust list, to add anchors)"
    n = extra.count("BEGIN CERTIFICATE")
    where = "given by the caller" if trust_pem else f"from {os.environ.get(TRUST_ENV)}"
    return base + f" plus {n} anchor(s) {where}"


def _c2pa_read(data: bytes, trust_pem: str | None) -> tuple[dict, dict] | None:
    import c2pa

    settings = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
    extra = trust_anchors(trust_pem)
    if extra:
        settings["trust"] = {"user_anchors": extra}
    ctx = c2pa.Context.from_dict(settings)
    reader = c2pa.Reader.try_create(_mime(data), io.BytesIO(data), None, ctx)
    if reader is None:
        return None
    with reader:
        store = json.loads(reader.json())
        try:
            cr = json.loads(reader.crjson())
        except Exception:  # noqa: BLE001 (the certificate details are a bonus; the store is what counts)
            cr = {}
    return store, cr


def _mime(data: bytes) -> str:
    sigs = ((b"\xff\xd8", "image/jpeg"), (b"\x89PNG", "image/png"), (b"RIFF", "image/webp"), (b"GIF8", "image/gif"),
            (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"), (b"BM", "image/bmp"))
    for sig, mime in sigs:
        if data.startswith(sig):
            return mime
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "image/avif" if b"avif" in data[8:12] else "image/heic"
    return "image/jpeg"


def read_c2pa(data: bytes, ev: Evidence, timeout: float = C2PA_TIMEOUT_S, trust_pem: str | None = None) -> None:
    """Read and validate an embedded C2PA manifest store (c2pa-python), within ``timeout`` seconds."""
    if b"jumb" not in data and b"c2pa" not in data:  # no JUMBF box: no embedded manifest (fast path)
        return
    try:
        import c2pa
    except ImportError:
        ev.notes.append("c2pa-python is not installed: Content Credentials were not checked")
        return
    started = threading.Event()

    def task():
        started.set()
        return _c2pa_read(data, trust_pem)

    future = _C2PA_POOL.submit(task)
    if not started.wait(timeout):  # every checker is still busy with earlier files that did not finish
        future.cancel()
        ev.notes.append("C2PA validation skipped: the checker is still busy with earlier files that did not finish")
        return
    try:
        got = future.result(timeout=timeout)  # the bound counts from the start of this file's validation
    except concurrent.futures.TimeoutError:
        ev.notes.append(f"C2PA validation did not finish within {timeout:g} s and was not waited for")
        return
    except c2pa.C2paError as e:
        ev.notes.append(f"C2PA data is present but could not be read ({_short(e)}); treated as absent")
        return
    if got is None:
        return
    store, cr = got
    ev.findings.append(c2pa_finding(store, cr))


def c2pa_finding(store: dict, cr: dict | None = None) -> Finding:
    """A manifest store (Reader.json) -> one finding: who signed, what it claims, and whether it holds."""
    label = store.get("active_manifest")
    m = (store.get("manifests") or {}).get(label) or {}
    state = store.get("validation_state") or "Unknown"
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    failures = [f.get("code", "") for f in results.get("failure", [])]
    failures += [s.get("code", "") for s in store.get("validation_status") or [] if s.get("code")]
    pixels_changed = any(c in PIXEL_HASH_FAILURES for c in failures)
    credential_codes = [c for c in failures if c.startswith("signingCredential.")]
    credential = sorted({CREDENTIAL_FAILURES.get(c, c) for c in credential_codes})
    # Anything else that failed (signature, assertion or timestamp hashes, an unsupported algorithm...), or a
    # state that is neither Trusted nor Valid, means the manifest cannot be relied on.
    other = [c for c in failures if c not in credential_codes]
    manifest_broken = not pixels_changed and (bool(other) or (state not in ("Trusted", "Valid") and not credential))
    sig = m.get("signature_info") or {}
    cert = _certificate(cr or {}, label)
    signer = sig.get("issuer") or cert.get("subject", {}).get("O") or sig.get("common_name") or "an unnamed signer"
    actions = []
    for a in m.get("assertions") or []:
        if str(a.get("label", "")).startswith("c2pa.actions"):
            actions += (a.get("data") or {}).get("actions") or []
    sources = [str(a.get("digitalSourceType", "")) for a in actions if a.get("digitalSourceType")]
    created = [str(a.get("digitalSourceType", "")) for a in actions
               if a.get("digitalSourceType") and str(a.get("action", "")).startswith("c2pa.created")]
    claim, meaning = _source_claim(created or sources)
    later_ai = [s for a in actions if not str(a.get("action", "")).startswith("c2pa.created")
                for s in [str(a.get("digitalSourceType", ""))] if _source_claim([s])[0] in AI_CLAIMS]
    if created and later_ai and claim not in AI_CLAIMS:  # a capture edited later with generative AI
        claim, meaning = "ai-edited", "edited with generative AI after it was made"
    generators = [g.get("name", "") for g in m.get("claim_generator_info") or [] if isinstance(g, dict)]
    if m.get("claim_generator"):
        generators.append(str(m["claim_generator"]))
    agents = []
    for a in actions:
        agent = a.get("softwareAgent")
        agents.append(agent.get("name", "") if isinstance(agent, dict) else str(agent or ""))
    details = {
        "validation_state": state, "failures": sorted(set(failures)),
        "signer": {"organisation": sig.get("issuer"), "common_name": sig.get("common_name"),
                   "certificate_subject": cert.get("subject"), "certificate_issuer": cert.get("issuer"),
                   "serial": sig.get("cert_serial_number"), "algorithm": sig.get("alg")},
        "signed_at": sig.get("time"), "claim_generator": [g for g in generators if g],
        "actions": [{"action": a.get("action"), "digitalSourceType": a.get("digitalSourceType"),
                     "softwareAgent": agents[i] or None} for i, a in enumerate(actions)][:32],
        "digital_source_types": sorted(set(sources)),
        "ingredients": [{"title": i.get("title"), "relationship": i.get("relationship"),
                         "format": i.get("format")} for i in (m.get("ingredients") or [])][:32],
        "title": m.get("title"), "intact": not (pixels_changed or manifest_broken),
    }
    what = {"ai-generated": "declare this image AI-generated", "ai-edited": "declare this image edited with AI",
            "synthetic": "declare this image synthetic", "camera": "declare this image a camera capture",
            "edited": f"declare this image {meaning}", "human-made": "declare this image human-made digital art",
            }.get(claim, "are attached, with no statement of how the image was made")
    if pixels_changed:
        return Finding("c2pa", "declared", claim, f"Content Credentials from {signer} {what}, but the image was "
                       "changed after signing (hash mismatch)",
                       "Someone signed a claim about an earlier version of this file.", LIMITS["c2pa-tampered"], details)
    if manifest_broken:
        return Finding("c2pa", "declared", claim, f"Content Credentials from {signer} {what}, but the manifest does "
                       "not verify (signature or assertion hash mismatch)",
                       "The file carries a C2PA manifest; it cannot be relied on.", LIMITS["c2pa-broken"], details)
    if credential or state != "Trusted":
        why = ", ".join(credential) or "certificate not on the trust list"
        limit = (LIMITS["c2pa-credential"] if any(c != "signingCredential.untrusted" for c in credential_codes)
                 else LIMITS["c2pa-untrusted"])
        return Finding("c2pa", "declared", claim, f"Content Credentials signed by {signer} ({why}) {what}",
                       "The manifest is intact and bound to these pixels.", limit, details)
    return Finding("c2pa", "verified", claim, f"Signed Content Credentials from {signer} {what}",
                   f"{signer} signed this claim about exactly these pixels (signature and hashes valid, certificate "
                   "on the trust list).", LIMITS["c2pa-trusted"], details)


def _certificate(cr: dict, label: str | None) -> dict:
    mans = cr.get("manifests") or []
    for m in mans if isinstance(mans, list) else []:
        if not label or m.get("label") in (label, None):
            info = (m.get("signature") or {}).get("certificateInfo") or {}
            if info:
                return {"subject": info.get("subject"), "issuer": info.get("issuer"), "validity": info.get("validity")}
    return {}


def _source_claim(sources: list[str]) -> tuple[str, str]:
    """The most telling IPTC source type among ``sources`` -> (claim, meaning)."""
    found = [SOURCE_TYPES[s.rsplit("/", 1)[-1]] for s in sources if s.rsplit("/", 1)[-1] in SOURCE_TYPES]
    found.sort(key=lambda c: (c[0] not in AI_CLAIMS, c[0] != "camera"))
    return found[0] if found else ("unknown", "")


def _short(e: Exception, n: int = 200) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= n else s[:n] + "..."


# --- metadata: EXIF, XMP, IPTC, PNG text, watermarks ----------------------------------------------------

def read_metadata(data: bytes, ev: Evidence, watermarks: bool = True) -> None:
    from .preprocess import ImageError, open_image

    try:
        img = open_image(data)
    except ImageError as e:
        ev.notes.append(f"metadata not read: {e}")
        return
    except Exception as e:  # noqa: BLE001 (Pillow's open on hostile text chunks, see preprocess)
        ev.notes.append(f"metadata not read ({type(e).__name__}: {_short(e)})")
        return
    for name, step in (("EXIF", _exif), ("XMP", _xmp), ("IPTC", _iptc), ("PNG text", _png_text)):
        try:
            step(img, ev)
        except Exception as e:  # noqa: BLE001
            ev.notes.append(f"{name} metadata unreadable ({type(e).__name__}: {_short(e)}); skipped")
    if getattr(img, "text_stripped", None):
        ev.notes.append(img.text_stripped)
    if watermarks:
        try:
            _watermarks(img, ev)
        except Exception as e:  # noqa: BLE001
            ev.notes.append(f"watermark check failed ({type(e).__name__}: {_short(e)}); skipped")


def _exif(img: Image.Image, ev: Evidence) -> None:
    exif = img.getexif()
    if not exif:
        return
    tags = {ExifTags.TAGS.get(k, str(k)): v for k, v in exif.items()}
    try:
        tags.update({ExifTags.TAGS.get(k, str(k)): v for k, v in exif.get_ifd(ExifTags.IFD.Exif).items()})
    except Exception as e:  # noqa: BLE001 (absurd offsets: Pillow may raise on the sub-IFD)
        ev.notes.append(f"EXIF sub-directory unreadable ({type(e).__name__}); base tags kept")
    fields = {k: _text(tags[k]) for k in (*CAMERA_EXIF, "Software", "DateTime", "Artist", "ImageDescription")
              if k in tags and _text(tags[k])}
    comment = _user_comment(tags.get("UserComment"))
    if comment:
        params = parse_a1111(comment)
        if params:
            ev.findings.append(_generation("exif", "EXIF UserComment", "AUTOMATIC1111/Forge", params))
    sw = fields.get("Software", "") + " " + fields.get("ImageDescription", "") + " " + fields.get("Artist", "")
    if AI_SOFTWARE.search(sw):
        ev.findings.append(_names_ai("exif", "EXIF names AI software", sw.strip(), WROTE_IT, fields))
    if fields.get("Make") or fields.get("Model"):
        cam = " ".join(dict.fromkeys(x for x in (fields.get("Make"), fields.get("Model")) if x))
        shot = ", ".join(x for x in (_exposure(fields.get("ExposureTime")), _fnum(fields.get("FNumber")),
                                     f"ISO {fields['ISOSpeedRatings']}" if fields.get("ISOSpeedRatings") else "",
                                     fields.get("DateTimeOriginal", "")) if x)
        ev.findings.append(Finding("exif", "declared", "camera", f"Camera EXIF: {cam}" + (f" ({shot})" if shot else ""),
                                   "A camera or phone (or a program imitating one) wrote these tags.",
                                   LIMITS["camera"], fields))


WROTE_IT = "The program that wrote the file names itself an AI tool."


def _names_ai(source: str, label: str, name: str, proves: str, details: dict) -> Finding:
    """A metadata field names an AI tool (EXIF Software, XMP CreatorTool, IPTC Credit, PNG Software...)."""
    return Finding(source, "declared", "ai-generated", f"{label}: {_clip(name, 80)}", proves, LIMITS["metadata"],
                   details)


def _text(v) -> str:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return " ".join(str(v).replace("\x00", " ").split())[:200]


def _user_comment(v) -> str:
    """EXIF UserComment: an 8-byte charset prefix, then text (A1111 writes its parameters here in JPEG/WebP)."""
    if not isinstance(v, bytes) or len(v) < 8:
        return v if isinstance(v, str) else ""
    head, body = v[:8], v[8:MAX_TEXT_VALUE]
    if head.startswith(b"UNICODE"):
        enc = "utf-16-be" if body[:1] == b"\x00" else "utf-16-le"
        return body.decode(enc, "replace")
    return body.decode("utf-8", "replace").strip("\x00 ")


def _exposure(v) -> str:
    try:
        x = float(v)
        return f"1/{round(1 / x)} s" if 0 < x < 1 else f"{x:g} s"
    except (TypeError, ValueError, ZeroDivisionError):
        return ""


def _fnum(v) -> str:
    try:
        return f"f/{float(v):.1f}"
    except (TypeError, ValueError):
        return ""


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


RDF_RESOURCE = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}resource"
XMP_KEYS = ("DigitalSourceType", "CreatorTool", "softwareAgent", "Credit", "Make", "Model", "provenance",
            "GeneratorName", "AISystemUsed", "AIPromptInformation")


def _xmp(img: Image.Image, ev: Evidence) -> None:
    raw = img.info.get("xmp")
    if not raw:
        return
    if len(raw) > MAX_XMP_BYTES:
        ev.notes.append(f"XMP packet of {len(raw) / 2**20:.1f} MB skipped (limit {MAX_XMP_BYTES // 2**20} MB)")
        return
    from defusedxml import ElementTree

    if isinstance(raw, str):
        raw = raw.encode("utf-8", "replace")
    raw = raw[raw.find(b"<"):].rstrip(b"\x00 \r\n\t")  # the packet's padding and wrapper PIs are valid XML
    try:
        root = ElementTree.fromstring(raw)
    except Exception as e:  # noqa: BLE001 (malformed XML, entities refused by defusedxml)
        ev.notes.append(f"XMP packet unreadable ({type(e).__name__}); skipped")
        return
    values: dict[str, list[str]] = {}
    for el in root.iter():
        if not isinstance(el.tag, str):  # comments and processing instructions
            continue
        # a property as an element (its text, or rdf:resource="URI") or as an attribute
        own = (el.text or "").strip() or el.attrib.get(RDF_RESOURCE, "")
        for k, v in [(el.tag, own)] + [(k, v) for k, v in el.attrib.items() if k != RDF_RESOURCE]:
            name = str(k).rsplit("}", 1)[-1]
            if name in XMP_KEYS and isinstance(v, str) and v.strip():
                values.setdefault(name, []).append(" ".join(v.split())[:300])
    shown = {k: v[:8] for k, v in values.items()}
    dst = values.get("DigitalSourceType", [])
    if dst:
        claim, meaning = _source_claim(dst)
        short = dst[0].rsplit("/", 1)[-1]
        if claim != "unknown":
            ev.findings.append(Finding("xmp", "declared", claim,
                                       f"IPTC metadata (XMP DigitalSourceType {short}) declares this image {meaning}",
                                       "The file's XMP carries the IPTC statement of how it was made.",
                                       LIMITS["metadata"], shown))
    tools = values.get("CreatorTool", []) + values.get("softwareAgent", []) + values.get("Credit", []) \
        + values.get("AISystemUsed", []) + values.get("GeneratorName", [])
    ai_tools = [t for t in tools if AI_SOFTWARE.search(t)]
    if ai_tools and not any(f.source == "xmp" and f.claim in AI_CLAIMS for f in ev.findings):
        ev.findings.append(_names_ai("xmp", "XMP names AI software", ai_tools[0],
                                     "A program that wrote or edited the file names itself an AI tool.", shown))
    if values.get("provenance"):
        ev.notes.append(f"XMP points at a remote Content Credentials manifest ({_clip(values['provenance'][0], 120)}); "
                        "not fetched")


def _iptc(img: Image.Image, ev: Evidence) -> None:
    if img.format not in ("JPEG", "TIFF"):
        return
    info = IptcImagePlugin.getiptcinfo(img) or {}
    fields = {"credit": info.get((2, 110)), "byline": info.get((2, 80)), "program": info.get((2, 65)),
              "caption_writer": info.get((2, 122)), "source": info.get((2, 115))}
    fields = {k: _text(v if not isinstance(v, list) else b" ".join(v)) for k, v in fields.items() if v}
    hits = [v for v in fields.values() if AI_SOFTWARE.search(v)]
    if hits:
        ev.findings.append(_names_ai("iptc", "IPTC metadata names AI", hits[0], "The file's IPTC fields credit an AI tool.",
                                     fields))


def _png_text(img: Image.Image, ev: Evidence) -> None:
    if img.format not in ("PNG", "WEBP"):
        return
    info = {k: v for k, v in img.info.items() if isinstance(k, str) and isinstance(v, (str, bytes))}
    text = {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)[:MAX_TEXT_VALUE] for k, v in info.items()
            if k not in ("xmp", "XML:com.adobe.xmp", "icc_profile", "exif")}
    if not text:
        return
    n = len(text)
    if n > 256:
        ev.notes.append(f"{n} PNG text chunks: only the known generator keys were read")
    found = png_generation(text)
    hits = [text[k] for k in ("Software", "Source", "Author", "Comment", "Title") if AI_SOFTWARE.search(text.get(k, ""))]
    if found:
        ev.findings.append(found)
    elif hits:
        ev.findings.append(_names_ai("png-text", "PNG text names AI software", hits[0], WROTE_IT,
                                     {k: _clip(v, 300) for k, v in list(text.items())[:16]}))


def png_generation(text: dict[str, str]) -> Finding | None:
    """Generation parameters that front ends write into PNG text chunks -> one finding, or None."""
    if "parameters" in text:
        p = text["parameters"]
        if p.lstrip().startswith("{"):
            js = _json(p)
            if isinstance(js, dict):
                tool = "Fooocus" if "fooocus" in p.lower() else "a Stable Diffusion front end"
                return _generation("png-text", "PNG text 'parameters' (JSON)", tool, _pick(js))
        params = parse_a1111(p)
        if params:
            tool = "Forge" if str(params.get("Version", "")).startswith("f") else "AUTOMATIC1111/Forge"
            return _generation("png-text", "PNG text 'parameters'", tool, params)
    if "prompt" in text or "workflow" in text:
        params = parse_comfyui(text.get("prompt", ""), text.get("workflow", ""))
        if params:
            return _generation("png-text", "PNG text 'prompt'/'workflow'", "ComfyUI", params)
    if text.get("Software", "").startswith("NovelAI") or "NovelAI" in text.get("Source", ""):
        js = _json(text.get("Comment", ""))
        params = _pick(js) if isinstance(js, dict) else {}
        params.update({"prompt": text.get("Description", "")[:500], "model": text.get("Source", "")})
        return _generation("png-text", "PNG text 'Comment'/'Source'", "NovelAI", params)
    for key in ("invokeai_metadata", "sd-metadata", "invokeai_graph", "Dream"):
        if key in text:
            js = _json(text[key])
            params = _pick(js) if isinstance(js, dict) else {"text": text[key][:500]}
            return _generation("png-text", f"PNG text '{key}'", "InvokeAI", params)
    if "sui_image_params" in text:
        js = _json(text["sui_image_params"])
        return _generation("png-text", "PNG text 'sui_image_params'", "SwarmUI",
                           _pick(js.get("sui_image_params", js)) if isinstance(js, dict) else {})
    desc = text.get("Description", "")
    if "Job ID:" in desc or "midjourney" in (text.get("Author", "") + desc).lower():
        return _generation("png-text", "PNG text 'Description'", "Midjourney",
                           {"prompt": desc.split("Job ID:")[0].strip()[:500],
                            "job_id": desc.split("Job ID:")[-1].strip()[:64] if "Job ID:" in desc else None})
    return None


def _generation(source: str, where: str, tool: str, params: dict) -> Finding:
    shown = ", ".join(f"{k} {params[k]}" for k in ("model", "Model", "sampler", "Sampler", "steps", "Steps", "seed",
                                                    "Seed") if params.get(k) not in (None, ""))
    return Finding(source, "declared", "ai-generated",
                   f"Generation parameters from {tool} in the file's metadata ({where})" + (f": {_clip(shown, 120)}"
                                                                                            if shown else ""),
                   f"{tool} (or a program imitating it) wrote a prompt and sampler settings into this file.",
                   LIMITS["metadata"], {"tool": tool, "where": where, **params})


def parse_a1111(text: str) -> dict:
    """AUTOMATIC1111/Forge ``parameters``: prompt, negative prompt, then a ``Key: value, ...`` line."""
    text = text.strip()
    lines = text.splitlines()
    if not lines or not re.match(r"^Steps: \d+", lines[-1].strip()):
        return {}
    settings = {}
    for part in _split_outside_quotes(lines[-1][:MAX_SETTINGS_LINE]):
        key, sep, value = part.partition(":")
        if sep and key.strip() and len(key) <= 64:
            settings[key.strip()] = value.strip().strip('"')
    body = "\n".join(lines[:-1])
    prompt, _, negative = body.partition("Negative prompt:")
    keep = {k: settings[k] for k in list(settings)[:24]}
    return {"prompt": _clip(prompt.strip(), 500), "negative_prompt": _clip(negative.strip(), 300), **keep}


def _split_outside_quotes(line: str) -> list[str]:
    """``a: 1, b: "x, y", c: 2`` -> the three parts (one pass: no regular expression to backtrack)."""
    parts, start, quoted, escaped = [], 0, False, False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append(line[start:i])
            start = i + 1
    parts.append(line[start:])
    return parts


def parse_comfyui(prompt: str, workflow: str) -> dict:
    """ComfyUI's API graph (``prompt``) or UI graph (``workflow``): node types, checkpoint, sampler settings."""
    graph = _json(prompt)
    nodes = []
    if isinstance(graph, dict):
        nodes = [n for n in graph.values() if isinstance(n, dict) and "class_type" in n][:2000]
    out: dict = {}
    if nodes:
        out["nodes"] = sorted({str(n["class_type"]) for n in nodes})[:40]
        for n in nodes:
            inputs = n.get("inputs") if isinstance(n.get("inputs"), dict) else {}
            for k in ("ckpt_name", "unet_name", "model_name"):
                if isinstance(inputs.get(k), str):
                    out.setdefault("model", inputs[k])
            if "sampler" in str(n["class_type"]).lower():
                for k in ("seed", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"):
                    if isinstance(inputs.get(k), (int, float, str)):
                        out.setdefault(k.replace("noise_", "").replace("sampler_name", "sampler"), inputs[k])
            if str(n["class_type"]).startswith("CLIPTextEncode") and isinstance(inputs.get("text"), str):
                out.setdefault("prompt", _clip(inputs["text"], 500))
    else:
        wf = _json(workflow)
        if isinstance(wf, dict) and isinstance(wf.get("nodes"), list):
            out["nodes"] = sorted({str(n.get("type")) for n in wf["nodes"][:2000] if isinstance(n, dict)})[:40]
    return out


def _json(s: str):
    try:
        return json.loads(s)
    except (ValueError, TypeError, RecursionError):
        return None


def _pick(d: dict) -> dict:
    keep = {}
    for k, v in list(d.items())[:64]:
        if isinstance(v, (str, int, float, bool)):
            keep[str(k)] = _clip(v, 300) if isinstance(v, str) else v
    return keep


def _watermarks(img: Image.Image, ev: Evidence) -> None:
    """Read the Stable Diffusion watermarks with invisible-watermark's dwtDct block decoder.

    The library's ``WatermarkDecoder.decode`` converts to YUV, takes the Haar LL band of the U channel,
    scores every 4x4 block (``EmbedMaxDct.decode_frame``) and averages the scores of the blocks that carry
    each bit (the pattern repeats in raster order). Here the same steps run once and the block scores are
    grouped for each of the three patterns, instead of three full decodes; on large images only the top
    rows are read (WATERMARK_BLOCKS blocks: every bit still gets 30 or more votes), so the cost stays
    bounded. Same results as the library's decode on the same rows.
    """
    try:
        import cv2
        import pywt
        from imwatermark.maxDct import EmbedMaxDct
    except ImportError:
        ev.notes.append("invisible-watermark is not installed: watermarks were not checked")
        return
    w, h = img.size
    if w * h < WATERMARK_PIXELS or min(w, h) < 16:  # the library decoder's own minimum (256x256 pixels)
        ev.notes.append(f"{w}x{h} is too small for the watermark decoder (it needs {WATERMARK_PIXELS:,} pixels and "
                        "16 a side): not checked")
        return
    from .preprocess import WORK_BYTES, decoded_bytes

    if decoded_bytes(img) > WORK_BYTES:  # Pillow decodes the whole file to give the top rows: bound its memory
        ev.notes.append(f"{w}x{h} is too large to check for the watermark within the memory bound "
                        f"({WORK_BYTES // 2 ** 20} MB decoded): not checked")
        return
    per_row = (w // 4 * 4 // 2) // WATERMARK_BLOCK  # blocks in one row of blocks of the LL band
    if per_row > 4 * WATERMARK_BLOCKS:  # one row of blocks would already cost four times the budget
        ev.notes.append(f"{w} px is too wide to check for the watermark within the time bound: not checked")
        return
    rows = min(h, -(-WATERMARK_BLOCKS // per_row) * 2 * WATERMARK_BLOCK)  # whole block rows: positions match
    from .preprocess import to_rgb

    bgr = np.ascontiguousarray(np.asarray(to_rgb(img.crop((0, 0, w, rows))))[:, :, ::-1])
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
    r, c = yuv.shape[:2]
    ll, _ = pywt.dwt2(yuv[: r // 4 * 4, : c // 4 * 4, 1], "haar")  # the U channel, as the library reads it
    scores = np.asarray(EmbedMaxDct([], 1, WATERMARK_SCALES, WATERMARK_BLOCK)
                        .decode_frame(ll, WATERMARK_SCALES[1], [[]])[0], np.float64)
    results = []
    for name, expected in WATERMARKS.items():
        n = len(expected)
        bits = np.array([scores[b::n].mean() * 255 > 127 for b in range(n)], np.uint8)  # the library's rule
        agree = int((bits == expected).sum())
        results.append({"watermark": name, "bits": n, "agreeing": agree, "agreement": round(agree / n, 4),
                        "chance": binomial_tail(agree, n), "votes_per_bit": len(scores) // n})
    best = min(results, key=lambda r: r["chance"])
    if best["chance"] < WATERMARK_CHANCE:
        ev.findings.append(Finding(
            "watermark", "heuristic", "ai-generated",
            f"Invisible watermark of {best['watermark']} found ({best['agreeing']} of {best['bits']} bits agree; "
            f"chance {best['chance']:.0e})",
            "The image carries the pattern that Stable Diffusion's reference code embeds in what it generates.",
            LIMITS["watermark"], {"decoded": results, "rows_read": rows}))
    else:
        ev.notes.append("No Stable Diffusion watermark: best bit agreement "
                        f"{best['agreement']:.0%} ({best['watermark']}), what chance gives; resizing and JPEG "
                        "remove it, so absence proves nothing")


def binomial_tail(k: int, n: int) -> float:
    """P(at least k of n fair coin flips agree): how likely this agreement is by accident."""
    return float(sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n)
