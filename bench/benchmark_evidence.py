"""What provenance evidence costs per image, and which watermarks survive which edits.

    python -m bench.benchmark_evidence [--runs 7] [--save]

Part 1 times ``detector.provenance.gather`` (C2PA, EXIF/XMP/IPTC, PNG text, watermarks) on the app's
example images and on artefacts made here (bench/artefacts.py: a C2PA-signed photo, watermarked renders,
generator PNG chunks, a 12-megapixel camera JPEG): median milliseconds per image, on this machine's CPUs.
Part 2 embeds each Stable Diffusion watermark with invisible-watermark's encoder and reads it back after
re-encoding, resizing and cropping. ``--save`` writes docs/results/evidence.json.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench import artefacts as art
from detector import provenance as pv

ROOT = Path(__file__).resolve().parent.parent


def corpus() -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted((ROOT / "assets" / "examples").glob("*.jpg"))}
    ca = art.test_ca("Benchmark Lab")
    photo = art.encode(art.photo_like(1024, 768, seed=1), "JPEG", quality=90)
    files["c2pa_signed_1024x768.jpg"] = art.c2pa_sign(photo, ca)
    files["c2pa_signed_1024x768.png"] = art.c2pa_sign(art.encode(art.photo_like(1024, 768, seed=1), "PNG"), ca,
                                                      mime="image/png")
    files["sdxl_watermark_1024.png"] = art.encode(
        art.watermarked(art.photo_like(1024, 1024, seed=2), "SDXL (Stability AI and diffusers pipelines)"), "PNG")
    files["sd1_watermark_512.png"] = art.encode(
        art.watermarked(art.photo_like(512, 512, seed=3), "Stable Diffusion 1.x reference scripts"), "PNG")
    files["a1111_512.png"] = art.png_with_text(art.photo_like(512, 512, seed=4), {"parameters": art.A1111})
    files["comfyui_1024.png"] = art.png_with_text(art.photo_like(1024, 1024, seed=5),
                                                  {"prompt": art.comfyui_prompt(), "workflow": "{}"})
    files["camera_4032x3024.jpg"] = art.camera_jpeg(art.photo_like(4032, 3024, seed=6))
    return files


def time_gather(files: dict[str, bytes], runs: int) -> list[dict]:
    rows = []
    for name, data in files.items():
        pv.gather(data)  # warm: imports, the C2PA library's first call
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            ev = pv.gather(data)
            ts.append(time.perf_counter() - t)
        w, h = Image.open(io.BytesIO(data)).size
        top = ev.strongest
        rows.append({"file": name, "size": f"{w}x{h}", "bytes": len(data), "median_ms": round(statistics.median(ts) * 1000, 1),
                     "found": f"{top.strength}: {top.title}" if top else "nothing"})
    return rows


def survival() -> list[dict]:
    edits = {
        "PNG (lossless)": lambda im: art.encode(im, "PNG"),
        "JPEG q95": lambda im: art.encode(im, "JPEG", quality=95),
        "JPEG q90": lambda im: art.encode(im, "JPEG", quality=90),
        "JPEG q80": lambda im: art.encode(im, "JPEG", quality=80),
        "WebP q90": lambda im: art.encode(im, "WEBP", quality=90),
        "resized to 75%": lambda im: art.encode(np.asarray(Image.fromarray(im).resize(
            (im.shape[1] * 3 // 4, im.shape[0] * 3 // 4), Image.Resampling.BICUBIC)), "PNG"),
        "cropped 10 px off the top": lambda im: art.encode(im[10:], "PNG"),
    }
    out = []
    for which in pv.WATERMARKS:
        for size in (512, 1024):
            marked = art.watermarked(art.photo_like(size, size, seed=size), which)
            for edit, fn in edits.items():
                ev = pv.gather(fn(marked))
                f = [x for x in ev.findings if x.source == "watermark"]
                decoded = f[0].details["decoded"] if f else None
                if decoded is None:
                    note = next((n for n in ev.notes if "bit agreement" in n), "")
                    agreement = note.split("agreement ")[1].split("%")[0] + "%" if note else "?"
                else:
                    best = next(d for d in decoded if d["watermark"] == which)
                    agreement = f"{best['agreement']:.0%}"
                out.append({"watermark": which, "size": size, "edit": edit, "found": bool(f), "agreement": agreement})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--save", action="store_true", help="write docs/results/evidence.json")
    args = p.parse_args(argv)
    import torch

    started = time.perf_counter()
    rows = time_gather(corpus(), args.runs)
    print(f"{'file':<32} {'size':>10} {'ms':>7}  found   (torch threads {torch.get_num_threads()})")
    for r in rows:
        print(f"{r['file']:<32} {r['size']:>10} {r['median_ms']:>7.1f}  {r['found'][:90]}")
    med = statistics.median(r["median_ms"] for r in rows)
    full = [r["median_ms"] for r in rows if max(map(int, r["size"].split("x"))) > 64]  # not the CIFAKE thumbnails
    med_full = statistics.median(full)
    print(f"median over {len(rows)} images: {med:.1f} ms per image; over the {len(full)} full-size ones: "
          f"{med_full:.1f} ms; slowest {max(full):.1f} ms (target <= 50 ms median)")
    surv = survival()
    print(f"\n{'watermark':<46} {'size':>5}  {'edit':<26} found  agreement")
    for r in surv:
        print(f"{r['watermark']:<46} {r['size']:>5}  {r['edit']:<26} {'yes' if r['found'] else 'no ':<5}  {r['agreement']}")
    if args.save:
        from train.results import save_result

        out = save_result("evidence", {"runs": args.runs, "median_ms": med, "median_ms_full_size": med_full,
                                       "full_size_files": len(full), "timing": rows,
                                       "watermark_survival": surv}, started=started)
        print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
