"""The evidence model every reader shares: a :class:`Finding` (one piece of evidence, its strength and what
it does and does not prove), the :class:`Evidence` of one file, the IPTC source types, the limits every
reader keeps, and :func:`leads`, the policy that decides when evidence replaces the classifier's headline.

Strengths, strongest first:

- ``verified``: a C2PA manifest whose signature chains to the trust list and whose hashes match the
  pixels. Cryptographic: the signer made this claim about these bytes.
- ``declared``: what metadata says (IPTC DigitalSourceType, generator text chunks, camera EXIF, a C2PA
  manifest that is intact but signed by an untrusted certificate, or one whose hashes no longer match).
  Trivially stripped, and can be forged.
- ``heuristic``: a statistical signal (the Stable Diffusion watermarks' bit agreement). A public
  pattern, so anyone can embed it; resizing and JPEG remove it.
"""

from __future__ import annotations

import concurrent.futures
import threading

import logging
import math
import os
from dataclasses import asdict, dataclass, field

log = logging.getLogger(__package__)  # "detector.provenance", as before the package was split

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


# --- helpers the readers share --------------------------------------------------------------------------

def _source_claim(sources: list[str]) -> tuple[str, str]:
    """The most telling IPTC source type among ``sources`` -> (claim, meaning)."""
    found = [SOURCE_TYPES[s.rsplit("/", 1)[-1]] for s in sources if s.rsplit("/", 1)[-1] in SOURCE_TYPES]
    found.sort(key=lambda c: (c[0] not in AI_CLAIMS, c[0] != "camera"))
    return found[0] if found else ("unknown", "")


def _short(e: Exception, n: int = 200) -> str:
    s = " ".join(str(e).split())
    return s if len(s) <= n else s[:n] + "..."


def _clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def lazy_pool(prefix: str, workers: int = 4):
    """A getter of a thread pool made on first use (importing the package starts no thread), once."""
    lock, pool = threading.Lock(), []

    def get() -> concurrent.futures.ThreadPoolExecutor:
        with lock:
            if not pool:
                pool.append(concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=prefix))
            return pool[0]

    return get
