"""Tiny autoencoders of latent-diffusion VAEs (TAESD family, madebyollin/taesd, MIT): our definition of the
network, and an importer of the published weights. They make content-matched fakes (``train.tae_twins``).

    python -m train.tae                 # import the five from the fetched snapshots, check them on real photos

Every latent-diffusion image leaves a VAE decoder; a real photo encoded and decoded by a (distilled) VAE is
a fake twin with the same content. The importer reads each upstream file from a bare git snapshot
(``fetch github:owner/name`` puts it under ``$FAKESPOT_MIRROR``, default ``/work/.mirror``), checks its
SHA-256 against ``train/tae_sources.json``, maps its tensor names onto ``TinyAutoencoder`` and loads them
with ``strict=True`` (a missing, extra or misshapen tensor is an error: the check against the published
definition), then writes our float32 safetensors and a JSON record to ``$FAKESPOT_CACHE/tae/``. The
weights are a training tool: never committed, never shipped.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from detector.checkpoint import atomic_write, atomic_write_json
from train.wild_data import CACHE, ROOT

TAE_DIR = CACHE / "tae"
SOURCES_FILE = ROOT / "train" / "tae_sources.json"
MIRROR = Path(os.environ.get("FAKESPOT_MIRROR", "/work/.mirror"))


@dataclass(frozen=True)
class TAEConfig:
    latent_channels: int = 4  # 4 for SD 1.x / SDXL, 16 for SD3 / FLUX.1, 32 for FLUX.2
    midblock_gn: bool = False  # a global GroupNorm branch in the 1/8-scale blocks (FLUX.2's distillation needed it)


# One per latent space; the twins are spread over them in this order (train.tae_twins.assign).
AUTOENCODERS = {
    "taesd": TAEConfig(4),
    "taesdxl": TAEConfig(4),
    "taesd3": TAEConfig(16),
    "taef1": TAEConfig(16),
    "taef2": TAEConfig(32, midblock_gn=True),
}


def conv(n_in: int, n_out: int, **kw) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kw)


class Clamp(nn.Module):
    """Soft clamp of the latents to (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    """Three 3x3 convolutions with a residual connection; optionally a global GroupNorm branch first."""

    def __init__(self, n_in: int, n_out: int, midblock_gn: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv(n_in, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(), conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool = None
        if midblock_gn:
            n = 4 * n_in
            self.pool = nn.Sequential(nn.Conv2d(n_in, n, 1, bias=False), nn.GroupNorm(4, n), nn.ReLU(),
                                      nn.Conv2d(n, n_in, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def encoder(cfg: TAEConfig) -> nn.Sequential:
    """RGB in [0, 1] -> latents at 1/8 scale. The layer order is the published one: its indices name the tensors."""
    gn = cfg.midblock_gn
    return nn.Sequential(
        conv(3, 64), Block(64, 64),
        conv(64, 64, stride=2, bias=False), Block(64, 64), Block(64, 64), Block(64, 64),
        conv(64, 64, stride=2, bias=False), Block(64, 64), Block(64, 64), Block(64, 64),
        conv(64, 64, stride=2, bias=False), Block(64, 64, gn), Block(64, 64, gn), Block(64, 64, gn),
        conv(64, cfg.latent_channels),
    )


def decoder(cfg: TAEConfig) -> nn.Sequential:
    """Latents -> RGB (about [0, 1]) at 8x scale."""
    gn = cfg.midblock_gn
    return nn.Sequential(
        Clamp(), conv(cfg.latent_channels, 64), nn.ReLU(),
        Block(64, 64, gn), Block(64, 64, gn), Block(64, 64, gn), nn.Upsample(scale_factor=2), conv(64, 64, bias=False),
        Block(64, 64), Block(64, 64), Block(64, 64), nn.Upsample(scale_factor=2), conv(64, 64, bias=False),
        Block(64, 64), Block(64, 64), Block(64, 64), nn.Upsample(scale_factor=2), conv(64, 64, bias=False),
        Block(64, 64), conv(64, 3),
    )


class TinyAutoencoder(nn.Module):
    """Encoder and decoder of one latent space; ``forward`` is the round trip (sides a multiple of 8)."""

    def __init__(self, cfg: TAEConfig = TAEConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder(cfg)
        self.decoder = decoder(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> its reconstruction, clamped to [0, 1]."""
        return self.decoder(self.encoder(x)).clamp(0, 1)


def create_tae(name: str) -> TinyAutoencoder:
    """A randomly initialised autoencoder of the named latent space."""
    if name not in AUTOENCODERS:
        raise ValueError(f"unknown autoencoder {name!r}; valid: {', '.join(AUTOENCODERS)}")
    return TinyAutoencoder(AUTOENCODERS[name])


@torch.inference_mode()
def round_trip(model: TinyAutoencoder, rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> its (H, W, 3) uint8 reconstruction, any size: the image is reflect-padded to a
    multiple of 8 (the latent grid) and the result cropped back, so the output has the input's size."""
    h, w = rgb.shape[:2]
    x = torch.from_numpy(np.array(rgb, np.uint8)).permute(2, 0, 1)[None].float().div(255)
    ph, pw = -h % 8, -w % 8
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    # channels-last is about a quarter faster on the CPU (the same result to 1e-4)
    y = model(x.contiguous(memory_format=torch.channels_last))[0, :, :h, :w]
    return y.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse)) if mse > 0 else float("inf")


# -- importing the published weights ------------------------------------------------------------------------


def published_names(part: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An upstream file's tensors renamed onto ``TinyAutoencoder``: the published files hold one bare
    ``nn.Sequential`` each (``0.weight``, ``1.conv.0.bias``...), ComfyUI's checkpoints prefix them with
    ``taesd_encoder.`` / ``taesd_decoder.``; ours prefixes ``encoder.`` / ``decoder.``."""
    if part not in ("encoder", "decoder"):
        raise ValueError(f"part must be encoder or decoder, got {part!r}")
    out = {}
    for k, v in state.items():
        for prefix in (f"taesd_{part}.", f"{part}."):
            if k.startswith(prefix):
                k = k[len(prefix):]
                break
        out[f"{part}.{k}"] = v
    return out


def layout_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the sorted ``name:shape`` lines of a state dict: the published layout, kept in
    tae_sources.json so a test checks our definition against it without the weights."""
    lines = sorted(f"{k}:{list(v.shape)}" for k, v in state.items())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def load_published(model: TinyAutoencoder, parts: dict[str, dict[str, torch.Tensor]]) -> None:
    """Load upstream encoder and decoder tensors strictly (names and shapes must be exactly ours), as float32."""
    state = {}
    for part, tensors in parts.items():
        for k, v in published_names(part, tensors).items():
            if not torch.isfinite(v.float()).all():
                raise ValueError(f"{k}: non-finite values in the published {part}")
            state[k] = v.float()
    model.load_state_dict(state, strict=True)


def read_upstream(repo: str, commit: str, path: str, mirror: Path = MIRROR) -> bytes:
    """One file of a fetched bare snapshot (``mirror/owner+name/repo``) at ``commit``."""
    git_dir = mirror / repo.replace("/", "+") / "repo"
    if not git_dir.is_dir():
        raise FileNotFoundError(f"no snapshot of {repo} at {git_dir}: fetch github:{repo} first "
                                "(or point $FAKESPOT_MIRROR at the folder holding it)")
    done = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{commit}:{path}"], capture_output=True)
    if done.returncode:
        raise FileNotFoundError(f"{repo}@{commit[:12]}:{path}: {done.stderr.decode().strip()}")
    return done.stdout


def parse_upstream(path: str, blob: bytes) -> dict[str, torch.Tensor]:
    """Tensors of a published file: safetensors, or a ``.pth`` read with ``weights_only=True`` (never unpickling code)."""
    if path.endswith(".safetensors"):
        return st_load(blob)
    if path.endswith(".pth"):
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path}: expected a flat state dict of tensors")
        return state
    raise ValueError(f"{path}: expected .safetensors or .pth")


def sources() -> list[dict]:
    """The committed manifest: for each autoencoder part, where it comes from and its SHA-256."""
    return json.loads(SOURCES_FILE.read_text())


def import_one(name: str, entries: list[dict], out: Path = TAE_DIR, mirror: Path = MIRROR) -> TinyAutoencoder:
    """Import one autoencoder: read both parts, check their hashes, load strictly, write ours and its record."""
    model = create_tae(name)
    parts, record_sources = {}, {}
    for ent in entries:
        blob = read_upstream(ent["repo"], ent["commit"], ent["path"], mirror)
        digest = hashlib.sha256(blob).hexdigest()
        if digest != ent["sha256"]:
            raise ValueError(f"{ent['repo']}@{ent['commit'][:12]}:{ent['path']} has SHA-256 {digest}, "
                             f"the manifest {SOURCES_FILE.name} says {ent['sha256']}: not the file it was checked as")
        tensors = parse_upstream(ent["path"], blob)
        if layout_digest(tensors) != ent["layout_sha256"]:
            raise ValueError(f"{ent['path']}: its tensor names or shapes are not the ones {SOURCES_FILE.name} records")
        parts[ent["part"]] = tensors
        record_sources[ent["part"]] = ent
    load_published(model, parts)
    blob = st_save({k: v.detach().contiguous() for k, v in model.state_dict().items()})
    atomic_write(out / f"{name}.safetensors", blob)
    atomic_write_json(out / f"{name}.json", {
        "name": name, "architecture": "TinyAutoencoder (train/tae.py)", "config": asdict(model.cfg),
        "input": "RGB in [0, 1], sides a multiple of 8", "storage": "float32",
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "parameters": sum(p.numel() for p in model.parameters()), "sources": record_sources,
        "use": "training aid only (content-matched fake twins); never shipped"})
    return model.eval()


def load_tae(name: str, root: Path = TAE_DIR) -> TinyAutoencoder:
    """Our imported autoencoder, checked against its record (a truncated or foreign file is refused)."""
    wpath, rpath = root / f"{name}.safetensors", root / f"{name}.json"
    if not wpath.exists():
        raise FileNotFoundError(f"{wpath} missing: run python -m train.tae first")
    blob = wpath.read_bytes()
    rec = json.loads(rpath.read_text())
    if hashlib.sha256(blob).hexdigest() != rec["weights_sha256"]:
        raise ValueError(f"{wpath} does not match its record {rpath} (truncated or replaced): rerun python -m train.tae")
    model = TinyAutoencoder(TAEConfig(**rec["config"]))
    model.load_state_dict(st_load(blob), strict=True)
    return model.eval().to(memory_format=torch.channels_last)


def check_photos(n: int, side: int = 256) -> list[np.ndarray]:
    """Centre crops (side x side) of the first ``n`` real photos of the wild manifest at least that large, by SHA-256."""
    from detector.preprocess import load_rgb
    from train.wild_data import read_manifest

    out = []
    for it in sorted((i for i in read_manifest() if i.label == 0 and i.file.exists()), key=lambda i: i.sha256):
        img = load_rgb(it.file)
        w, h = img.size
        if min(w, h) >= side:
            x, y = (w - side) // 2, (h - side) // 2
            out.append(np.array(img.crop((x, y, x + side, y + side))))
        if len(out) == n:
            break
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--names", nargs="+", default=list(AUTOENCODERS), choices=list(AUTOENCODERS))
    p.add_argument("--mirror", type=Path, default=MIRROR, help="folder of fetched snapshots (owner+name/repo)")
    p.add_argument("--out", type=Path, default=TAE_DIR)
    p.add_argument("--check", type=int, default=8, help="real photos for the round-trip PSNR check (0: none)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    by_name: dict[str, list[dict]] = {}
    for ent in sources():
        by_name.setdefault(ent["name"], []).append(ent)
    photos = check_photos(args.check) if args.check else []
    for name in args.names:
        model = import_one(name, by_name[name], args.out, args.mirror)
        line = f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters, strict load ok"
        if photos:
            scores = [psnr(x, round_trip(model, x)) for x in photos]
            rpath = args.out / f"{name}.json"
            rec = json.loads(rpath.read_text())
            rec["check"] = {"round_trip_psnr_db": round(float(np.mean(scores)), 2), "min_db": round(float(min(scores)), 2),
                            "photos": len(photos), "crop": "256 px centre of the first real wild photos by SHA-256"}
            atomic_write_json(rpath, rec)
            line += f"; round trip of {len(photos)} real photos: PSNR {np.mean(scores):.2f} dB (min {min(scores):.2f})"
        print(line)


if __name__ == "__main__":
    main()
