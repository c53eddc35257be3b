"""Tiny autoencoders and their fake twins: our definition against the published layout, the round trip,
the fold rule (a held-out photo's twin never trains its fold) and the resumable, atomic twin writer."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from train import tae_twins
from train.tae import (
    AUTOENCODERS,
    SOURCES_FILE,
    create_tae,
    layout_digest,
    load_published,
    psnr,
    published_names,
    round_trip,
)
from train.tae_twins import assign, complete, crop_box, in_training, make_twins, read_twins, twin_items
from train.wild_cv import with_extras
from train.wild_data import WildItem


def test_the_sources_manifest_pins_every_part_of_every_autoencoder():
    entries = json.loads(SOURCES_FILE.read_text())
    assert {(e["name"], e["part"]) for e in entries} == {(n, p) for n in AUTOENCODERS for p in ("encoder", "decoder")}
    for e in entries:
        assert len(e["commit"]) == 40 and len(e["sha256"]) == 64 and "MIT" in e["licence"], e


@pytest.mark.parametrize("name", list(AUTOENCODERS))
def test_our_definition_has_the_published_names_and_shapes(name):
    """The layout digests in tae_sources.json were read from the upstream files: ours must match them."""
    model = create_tae(name)
    for e in json.loads(SOURCES_FILE.read_text()):
        if e["name"] == name:
            ours = getattr(model, e["part"]).state_dict()
            assert len(ours) == e["tensors"] and layout_digest(ours) == e["layout_sha256"], (name, e["part"])


def published_like(name: str, prefix: str = "") -> dict[str, dict[str, torch.Tensor]]:
    """Random tensors under the published names (bare indices, as upstream; or with ComfyUI's prefix), half precision."""
    src = create_tae(name)
    return {part: {f"{prefix and f'taesd_{part}.'}{k}": torch.randn_like(v).half()
                   for k, v in getattr(src, part).state_dict().items()} for part in ("encoder", "decoder")}


@pytest.mark.parametrize("prefix", ["", "taesd"])
def test_published_tensors_load_strictly_as_float32(prefix):
    parts = published_like("taef2", prefix)
    model = create_tae("taef2")
    load_published(model, parts)
    key = f"{'taesd_encoder.' if prefix else ''}12.pool.1.weight"  # the FLUX.2 variant's GroupNorm
    assert model.encoder[12].pool[1].weight.dtype == torch.float32
    assert torch.equal(model.encoder[12].pool[1].weight, parts["encoder"][key].float())
    assert set(published_names("decoder", {"taesd_decoder.1.weight": torch.zeros(1)})) == {"decoder.1.weight"}


def test_a_missing_or_misshapen_tensor_is_refused():
    parts = published_like("taesd")
    parts["decoder"].pop("19.weight")  # the last convolution (RGB out)
    with pytest.raises(RuntimeError, match="Missing"):
        load_published(create_tae("taesd"), parts)
    parts = published_like("taesd3")
    parts["encoder"]["14.weight"] = torch.zeros(4, 64, 3, 3)  # SD's 4 latent channels, not SD3's 16
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_published(create_tae("taesd3"), parts)
    with pytest.raises(ValueError, match="valid: taesd, taesdxl"):
        create_tae("sdxl-vae")


@pytest.mark.parametrize("name", ["taesd", "taef2"])
def test_a_round_trip_keeps_any_size(name):
    torch.manual_seed(0)
    model = create_tae(name).eval()
    x = np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)  # sides not a multiple of 8
    y = round_trip(model, x)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert psnr(x, x) == float("inf") and psnr(x, np.clip(x.astype(int) + 1, 0, 255)) > 48


def test_twins_are_spread_over_every_autoencoder_and_crops_are_bounded_and_grid_aligned():
    rng = np.random.default_rng(0)
    names = [assign(f"{rng.integers(0, 2**63):016x}" + "0" * 48) for _ in range(500)]
    assert set(names) == set(AUTOENCODERS) and min(names.count(n) for n in AUTOENCODERS) > 60
    assert crop_box(300, 200) == (0, 0, 300, 200)  # small: whole, native size
    x0, y0, x1, y1 = crop_box(4000, 3000, 512)
    assert (x1 - x0, y1 - y0) == (512, 512) and x0 % 8 == 0 and y0 % 8 == 0
    assert abs((x0 + x1) / 2 - 2000) <= 8 and abs((y0 + y1) / 2 - 1500) <= 8
    assert crop_box(700, 400, 512) == (88, 0, 600, 400)


def synthetic_parents(tmp_path, n_per_group: int = 3) -> list[WildItem]:
    items = []
    for g in ("faces", "web", "camera"):
        for i in range(n_per_group):
            sha = f"{g}{i}".encode().hex().ljust(64, "0")
            items.append(WildItem(sha, 0, f"src-{g}", "real", "train", tmp_path / f"{sha}.jpg", g))
            items.append(WildItem(sha[::-1], 1, f"gen-{g}", "sdxl", "train", tmp_path / f"{sha[::-1]}.png", g))
    return items


def rows_for(parents: list[WildItem]) -> list[dict]:
    """Twin rows as the writer makes them: every other parent's twin is of a region (a large parent)."""
    out = []
    for i, p in enumerate(x for x in parents if x.label == 0):
        size = (1000, 800) if i % 2 else (320, 240)
        box = crop_box(*size)
        out.append({"parent_sha256": p.sha256, "twin_sha256": f"{i:064x}", "autoencoder": assign(p.sha256),
                    "file": f"{p.sha256}.x.jpg", "box": " ".join(map(str, box)),
                    "parent_width": size[0], "parent_height": size[1]})
    return out


def test_no_fold_trains_on_a_held_out_photos_twin(tmp_path):
    items = synthetic_parents(tmp_path)
    extras = twin_items(items, rows_for(items))
    assert {x.label for x in extras} == {0, 1} and all(x.parent for x in extras)
    crops = [x for x in extras if x.box is not None]
    assert crops and all(x.label == 0 and x.box != (0, 0, 1000, 800) for x in crops)
    group_of = {it.sha256: it.group for it in items}
    g = np.array([it.group for it in items])
    for held in sorted(set(g)):
        training = {it.sha256 for it in items if it.group != held}
        keep = in_training(extras, training)
        assert keep.any()
        assert all(group_of[x.parent] != held for x, k in zip(extras, keep) if k)
        assert all(group_of[x.parent] == held for x, k in zip(extras, keep) if not k)
        # and the training arrays a fold gets: its items plus exactly those extras, twins labelled fake
        n = len(items)
        e = np.arange(n, dtype=np.float32)[:, None].repeat(512, 1)
        cls = np.zeros((n, 12, 768), np.float16)
        xe = -1 - np.arange(len(extras), dtype=np.float32)[:, None].repeat(512, 1)
        xcls = np.zeros((len(extras), 12, 768), np.float16)
        tr = g != held
        te, tc, ty, tw = with_extras(items, e, cls, tr, (extras, xe, xcls))
        assert len(te) == len(tc) == len(ty) == len(tw) == tr.sum() + keep.sum()
        assert set(te[:, 0][te[:, 0] >= 0].astype(int)) == set(np.flatnonzero(tr))
        assert set((-1 - te[:, 0][te[:, 0] < 0]).astype(int)) == set(np.flatnonzero(keep))
        assert ty[tr.sum():].tolist() == [x.label for x, k in zip(extras, keep) if k]
        assert np.isclose(tw.mean(), 1.0)
        w_all = np.arange(1, n + len(extras) + 1, dtype=float)  # weights over everything, sliced per fold
        *_, sliced = with_extras(items, e, cls, tr, (extras, xe, xcls), w_all)
        expect = np.concatenate([w_all[:n][tr], w_all[n:][keep]])
        assert np.allclose(sliced, expect / expect.mean())


def test_a_twin_without_its_parent_region_is_dropped(tmp_path):
    items = synthetic_parents(tmp_path, 2)
    extras = twin_items(items, rows_for(items))
    ok = np.ones(len(extras), bool)
    region = next(i for i, x in enumerate(extras) if x.box is not None)
    ok[region] = False
    kept = complete(extras, ok)
    assert not any(k for x, k in zip(extras, kept) if x.parent == extras[region].parent)
    assert kept.sum() == len(extras) - 2


def test_twins_are_written_like_their_parent_atomically_and_a_rerun_skips_them(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    photos, parents = tmp_path / "wild", []
    photos.mkdir()
    for i, (size, q) in enumerate([((48, 40), 75), ((70, 30), 92), ((40, 40), None)]):
        a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        sha = f"{i:064x}"
        path = photos / (f"{sha}.jpg" if q else f"{sha}.png")
        Image.fromarray(a).save(path, **({"quality": q, "subsampling": 0} if q else {}))
        parents.append(WildItem(sha, 0, "src", "real", "train", path, "web"))
    out = tmp_path / "twins"
    torch.manual_seed(0)
    load = lambda name: create_tae(name).eval()  # noqa: E731 (random weights: the writer is tested, not the twins)
    rows, made = make_twins(parents, out, load, max_side=64)
    assert made == 3 and len(read_twins(out / "twins.csv")) == 3
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"
    for p, r in zip(parents, sorted(rows, key=lambda r: r["parent_sha256"])):
        with Image.open(p.file) as a, Image.open(out / r["file"]) as b:
            assert (b.format, b.size) == (a.format, a.size if a.size[0] <= 64 else (64, a.size[1]))
            if a.format == "JPEG":
                assert b.quantization == a.quantization and r["quality"] == str(tae_twins.jpeg_quality(a))
        assert r["box"] == " ".join(map(str, crop_box(*Image.open(p.file).size, 64)))
    # a second run makes nothing, and rebuilds rows lost when a run was killed before writing the manifest
    monkeypatch.setattr(tae_twins, "make_twin", lambda *a, **k: pytest.fail("remade an existing twin"))
    (out / "twins.csv").unlink()
    rows2, made2 = make_twins(parents, out, load, max_side=64)
    assert made2 == 0
    with open(out / "twins.csv", newline="") as f:
        again = {r["parent_sha256"]: r for r in csv.DictReader(f)}
    assert {k: again[k]["twin_sha256"] for k in again} == {r["parent_sha256"]: r["twin_sha256"] for r in rows}


def test_a_twin_failing_as_it_is_stored_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / f"{0:064x}.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    parent = WildItem(f"{0:064x}", 0, "src", "real", "train", path, "web")
    out = tmp_path / "twins"

    def broken(*_):
        raise OSError("disk full")
    monkeypatch.setattr("detector.checkpoint.os.replace", broken)  # the last step of the atomic write
    with pytest.raises(OSError, match="disk full"):
        tae_twins.make_twin(parent, create_tae("taesd").eval(), "taesd", out)
    assert [p.name for p in out.iterdir()] == []
