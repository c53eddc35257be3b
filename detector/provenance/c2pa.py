"""Content Credentials (C2PA): the trust anchors, reading and validating an embedded manifest store with
c2pa-python within a time bound, and turning the store into one :class:`Finding` (``c2pa_finding``).

``import c2pa`` here is the c2pa-python library, not this module: imports are absolute.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import threading
from pathlib import Path

from .evidence import AI_CLAIMS, C2PA_TIMEOUT_S, LIMITS, Evidence, Finding, _short, _source_claim, lazy_pool

TRUST_ENV = "DETECTOR_C2PA_TRUST_ANCHORS"  # a PEM file of extra trust anchors (e.g. the C2PA trust list)
# C2PA validation codes (c2pa-rs) that say the pixels no longer match what was signed
PIXEL_HASH_FAILURES = ("assertion.dataHash.mismatch", "assertion.boxesHash.mismatch", "assertion.bmffHash.mismatch",
                       "assertion.collectionHash.mismatch")
CREDENTIAL_FAILURES = {"signingCredential.untrusted": "certificate not on the trust list",
                       "signingCredential.expired": "certificate expired",
                       "signingCredential.revoked": "certificate revoked",
                       "signingCredential.invalid": "certificate invalid"}

_c2pa_pool = lazy_pool("c2pa")  # the C2PA checkers (four threads), made on first use


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

    future = _c2pa_pool().submit(task)
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
