"""Metadata: EXIF (camera tags, Software, A1111's UserComment), XMP (IPTC DigitalSourceType, CreatorTool...),
IPTC and PNG text chunks, read by ``read_metadata``, which also runs the watermark check on the decoded image."""

from __future__ import annotations

import re

from PIL import ExifTags, Image, IptcImagePlugin

from .evidence import (AI_CLAIMS, LIMITS, MAX_TEXT_VALUE, MAX_XMP_BYTES, Evidence, Finding, _clip, _short,
                       _source_claim)
from .parameters import _generation, parse_a1111, png_generation
from .watermark import _watermarks

# Software names that AI generators and front ends write into Software, CreatorTool, Credit, ...
AI_SOFTWARE = re.compile(
    r"midjourney|dall[-·\s]?e|openai|chatgpt|stable\s*diffusion|sdxl|comfyui|automatic1111|forge|novelai|invokeai|"
    r"fooocus|firefly|imagen|gemini|made with google ai|flux|black forest|leonardo|ideogram|draw things|"
    r"runway|bing image creator|designer|dreamstudio|nightcafe|stability ai|swarmui|krea|recraft|"
    r"generated (?:with|by) ai|ai[- ]generated", re.IGNORECASE)
CAMERA_EXIF = ("Make", "Model", "LensModel", "ExposureTime", "FNumber", "ISOSpeedRatings", "FocalLength",
               "DateTimeOriginal")


def read_metadata(data: bytes, ev: Evidence, watermarks: bool = True) -> None:
    from ..preprocess import ImageError, open_image

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

