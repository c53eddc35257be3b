"""Real provenance artefacts, made on the spot: C2PA-signed images (a test certificate authority made
here), Stable Diffusion watermarks embedded with invisible-watermark's own encoder, generator PNG text
chunks and camera EXIF. The provenance tests and the evidence benchmark both use them; nothing here is
downloaded or committed.
"""

from __future__ import annotations

import datetime
import io
import json
import zipfile

import numpy as np
from PIL import Image, PngImagePlugin

from detector.provenance import IPTC_SOURCE, WATERMARKS


def photo_like(w: int = 512, h: int = 512, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 with smooth structure and fine noise: a stand-in for an image's texture."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.random((max(2, h // 32), max(2, w // 32), 3)).astype(np.float32), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    img = 40 + 170 * base + rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kw)
    return buf.getvalue()


# --- C2PA --------------------------------------------------------------------------------------------

def test_ca(org: str = "Test AI Lab") -> dict:
    """A root CA and an ES256 signing certificate it issued (the profile c2pa-rs accepts): PEM texts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                          x509.NameAttribute(NameOID.COUNTRY_NAME, "US")])

    now = datetime.datetime.now(datetime.timezone.utc)
    usage = {"content_commitment": False, "key_encipherment": False, "data_encipherment": False, "key_agreement": False,
                 "encipher_only": False, "decipher_only": False}
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name(f"{org} Test Root CA")).issuer_name(name(f"{org} Test Root CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **usage), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name(f"{org} Signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()
    return {"root": pem(ca), "chain": pem(leaf) + pem(ca),
            "key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()}


def c2pa_sign(image: bytes, ca: dict, mime: str = "image/jpeg", source_type: str = "trainedAlgorithmicMedia",
              generator: str = "Test Image Generator", ingredient: bytes | None = None) -> bytes:
    """``image`` with an embedded, signed C2PA manifest (c2pa-python's Builder) whose c2pa.created action
    carries the IPTC ``source_type``."""
    import c2pa

    manifest = {"claim_generator_info": [{"name": generator, "version": "1.0"}], "title": "generated",
                "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType": IPTC_SOURCE + source_type,
                     "softwareAgent": {"name": generator}}]}}]}
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, ca["chain"].encode(), ca["key"].encode(), None))
    ctx = c2pa.Context.from_dict({"verify": {"verify_after_sign": False}, "builder": {"thumbnail": {"enabled": False}}})
    with c2pa.Builder(manifest, context=ctx) as b:
        if ingredient is not None:
            b.add_ingredient({"title": "source.jpg", "relationship": "parentOf"}, mime, io.BytesIO(ingredient))
        out = io.BytesIO()
        b.sign(signer, mime, io.BytesIO(image), out)
    return out.getvalue()


def tamper(data: bytes, at: float = 0.75) -> bytes:
    """One byte of the image data flipped, well after the manifest (JPEG: inside the entropy-coded scan)."""
    b = bytearray(data)
    i = int(len(b) * at)
    b[i] = b[i] ^ 0x01 if b[i] not in (0xFE, 0xFF) else 0x10
    return bytes(b)


def strip_metadata(data: bytes) -> bytes:
    """The pixels re-saved by Pillow: Content Credentials, EXIF and XMP gone (what most uploads do)."""
    img = Image.open(io.BytesIO(data))
    return encode(np.asarray(img.convert("RGB")), img.format or "PNG", **({"quality": 95} if img.format == "JPEG" else {}))


# --- watermarks, PNG text, EXIF ---------------------------------------------------------------------

def watermarked(rgb: np.ndarray, which: str) -> np.ndarray:
    """``rgb`` with one of provenance.WATERMARKS embedded by invisible-watermark's encoder (dwtDct)."""
    from imwatermark import WatermarkEncoder

    enc = WatermarkEncoder()
    enc.set_watermark("bits", [int(b) for b in WATERMARKS[which]])
    return np.ascontiguousarray(enc.encode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDct")[:, :, ::-1])


A1111 = ("a photo of an astronaut riding a horse, highly detailed\nNegative prompt: blurry, lowres\n"
         "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234567890, Size: 512x512, "
         "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1")


def comfyui_prompt() -> str:
    return json.dumps({
        "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "cfg": 8.0, "sampler_name": "euler",
                                                     "scheduler": "normal", "denoise": 1.0, "model": ["4", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat in a spacesuit", "clip": ["4", 1]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI"}}})


def png_with_text(rgb: np.ndarray, chunks: dict[str, str], itxt: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    for k, v in (itxt or {}).items():
        info.add_itxt(k, v)
    return encode(rgb, "PNG", pnginfo=info)


def camera_jpeg(rgb: np.ndarray, make: str = "Apple", model: str = "iPhone 13") -> bytes:
    img = Image.fromarray(rgb)
    exif = img.getexif()
    exif[0x010F], exif[0x0110], exif[0x0131] = make, model, "17.1"
    sub = exif.get_ifd(0x8769)
    sub[0x829A], sub[0x829D], sub[0x8827], sub[0x9003] = 1 / 120, 1.6, 50, "2026:11:30 10:00:00"
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92, exif=exif)
    return buf.getvalue()


def xmp_packet(source_type: str = "trainedAlgorithmicMedia", creator_tool: str = "", pad: int = 0) -> str:
    tool = f' xmp:CreatorTool="{creator_tool}"' if creator_tool else ""
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
            'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
            f'Iptc4xmpExt:DigitalSourceType="{IPTC_SOURCE}{source_type}"{tool}/></rdf:RDF></x:xmpmeta>'
            + " " * pad + '<?xpacket end="w"?>')


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of ``members`` (name -> bytes), made in memory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data, compress_type=method)
    return buf.getvalue()


def nested_zip_bomb(levels: int = 3, fan: int = 16, leaf: int = 900_000) -> bytes:
    """A zip of zips of zips (the 42.zip shape): every member under 1 MB and every level a fresh zip, so
    checks per zip or per large member never fire. The defaults, 16^3 leaves of 0.9 MB: 3.7 GB from 12 KB."""
    data = zip_bytes({f"a{i}.png": bytes(leaf) for i in range(fan)})
    for level in range(levels - 1):
        data = zip_bytes({f"l{level}_{i}.zip": data for i in range(fan)})
    return data
