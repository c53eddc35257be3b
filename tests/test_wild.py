"""The wild track: its data manifest, int8 and backbone-referencing checkpoints, routing, views and tiles."""

import csv
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import detector
from detector.checkpoint import INT8_SCALE, CheckpointError, load_checkpoint, read_record, save_checkpoint
from detector.record import Record
from detector.explain import tile_boxes, tile_map
from detector.models import ClipViTB16, WildDetector
from detector.predict import CIFAKE_MODEL, WILD_MODEL, AutoPredictor, Verdict, choose_track
from train.calibration import choose_threshold_guarded
from train.wild_data import MANIFEST, SOURCES, augmented, format_controlled, read_manifest

ROOT = Path(__file__).resolve().parent.parent
RESERVED = ROOT.parent / "shared" / "data" / "reserved_sha256.txt"


def manifest_rows() -> list[dict]:
    with open(MANIFEST, newline="") as f:
        return list(csv.DictReader(f))


def test_manifest_sources_are_split_disjoint_and_cover_both_classes():
    sources = json.loads(SOURCES.read_text())
    split = {s["name"]: s["split"] for s in sources}
    assert len(split) == len(sources), "a source name is used twice"
    assert len({s["repo"] for s in sources}) == len(sources), "one repository in two sources (and maybe two splits)"
    rows = manifest_rows()
    assert {r["source"] for r in rows} <= set(split)
    by_split = Counter((split[r["source"]], r["label"]) for r in rows)
    for s in ("train", "val", "test"):
        assert by_split[(s, "real")] > 0 and by_split[(s, "fake")] > 0, f"{s} lacks a class: {by_split}"
    labels = Counter(r["label"] for r in rows)
    assert labels["real"] >= 3000 and labels["fake"] >= 3000, labels
    assert len({r["sha256"] for r in rows}) == len(rows), "duplicate files in the manifest"
    for r in rows:
        # a GitHub source is pinned to a commit, a Debian package to its version
        pinned = len(r["commit"]) == 40 if not r["repo"].startswith("debian:") else bool(r["commit"])
        assert len(r["sha256"]) == 64 and r["repo"] and pinned and r["licence"] and r["blob"], r


@pytest.mark.skipif(not RESERVED.exists(), reason="the reserved-image list lives beside the checkout (shared/data)")
def test_no_manifest_image_is_a_reserved_one():
    reserved = {line.split()[0].lower() for line in RESERVED.read_text().splitlines() if line.strip()}
    assert reserved, "empty reserved list"
    hits = [r["path"] for r in manifest_rows() if r["sha256"] in reserved]
    assert not hits, hits[:5]


def test_read_manifest_joins_the_split_and_marks_fakes():
    items = read_manifest()
    assert items and all(it.split in ("train", "val", "test") for it in items)
    assert {it.label for it in items} == {0, 1}
    assert all(it.generator == "real" for it in items if it.label == 0)
    groups = {s["name"]: s["group"] for s in json.loads(SOURCES.read_text())}
    assert all(it.group == groups[it.source] for it in items)


def test_every_source_names_its_origin_group():
    sources = json.loads(SOURCES.read_text())
    assert all(isinstance(s.get("group"), str) and s["group"] for s in sources), \
        [s["name"] for s in sources if not s.get("group")]
    # a group is a leave-out unit of several sources, not a second name for one
    groups = Counter(s["group"] for s in sources)
    assert len(groups) < len(sources) / 2, groups


def _grid_figure(rng: np.random.Generator, rows: int = 3, cols: int = 3, tile: int = 150) -> tuple[Image.Image, list]:
    """A matplotlib-like figure: tiles on black, a caption line above each, the last row one short."""
    gap, caption = 10, 24
    fig = np.zeros((rows * (tile + caption + gap) + gap, cols * (tile + gap) + gap, 3), np.uint8)
    boxes = []
    for r in range(rows):
        for c in range(cols - (r == rows - 1)):
            x, y = gap + c * (tile + gap), gap + caption + r * (tile + caption + gap)
            fig[y:y + tile, x:x + tile] = rng.integers(20, 236, (tile, tile, 3))
            # caption: white strokes on black, a line of "text" wider than the tile
            fig[y - caption + 6:y - 6, max(0, x - 4):x + tile + 4:3] = 255
            boxes.append((x, y, r))
    fig[gap + caption:gap + caption + tile, gap:gap + 30] = 0  # one picture black at its left edge
    return Image.fromarray(fig), boxes


def test_gutter_tiles_cut_every_picture_and_no_caption():
    from train.build_wild import TILE_INSET, gutter_tiles

    img, boxes = _grid_figure(np.random.default_rng(0))
    tiles, rejected = gutter_tiles(img, min_side=100)
    t = TILE_INSET
    # the dark-edged picture keeps its full box: its column's edge is agreed by the rows below it
    assert sorted(tiles) == sorted((x + t, y + t, 150 - 2 * t, 150 - 2 * t, r) for x, y, r in boxes)
    assert rejected == 0
    assert gutter_tiles(Image.new("RGB", (400, 300)))[0] == []  # an all-black figure has no tiles


def test_tile_rows_are_cut_stored_as_png_and_rebuilt_alike():
    from train.build_wild import decode, read_member, tile_box

    img, _ = _grid_figure(np.random.default_rng(1))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path = "figures/grid.jpg@14,38,142,142"
    assert tile_box(path) == (14, 38, 142, 142)
    assert tile_box("rcc/a.rcc@100+2000") is None and tile_box("plain.jpg") is None

    class Snap:
        def blob(self, sha):
            return data

    assert read_member(Snap(), path, "b") == data  # the whole figure: decode cuts the tile
    assert read_member(Snap(), "x.rcc@2+5", "b") == data[2:7]  # a carved member is still a slice
    tile, stored, note = decode(data, 0, tile_box(path))
    assert tile.size == (142, 142) and tile.format == "JPEG" and note.startswith("tile cut")
    assert Image.open(io.BytesIO(stored)).format == "PNG"
    assert decode(data, 0, tile_box(path))[1] == stored  # a rebuild gives the same bytes
    from train.wild_data import stored_ext
    assert stored_ext(path, note) == ".png" and stored_ext("x.rcc@2+5", "") == ".webp"


def _random_int8_state(model: torch.nn.Module) -> dict:
    """Weights of ``model`` stored as int8 rows with scales, the way train.import_clip stores CLIP's."""
    state = {}
    for k, v in model.state_dict().items():
        if v.dim() == 2 and k.endswith(".weight"):
            scale = v.abs().amax(1) / 127
            state[k] = torch.round(v / scale[:, None]).to(torch.int8)
            state[k + INT8_SCALE] = scale
        else:
            state[k] = v.clone()
    return state


def test_int8_backbone_and_a_head_that_references_it_load_as_one_model(tmp_path):
    torch.manual_seed(0)
    backbone = ClipViTB16().eval()
    state = _random_int8_state(backbone)
    brec = save_checkpoint(tmp_path / "clip_vit_b16", None, Record("clip_vit_b16", kind="backbone"), state=state,
                           storage="int8")
    loaded, _ = load_checkpoint(tmp_path / "clip_vit_b16")
    w = loaded.state_dict()["vit.blocks.0.attn.qkv.weight"]
    expected = state["vit.blocks.0.attn.qkv.weight"].float() * state["vit.blocks.0.attn.qkv.weight" + INT8_SCALE][:, None]
    assert w.dtype == torch.float32 and torch.equal(w, expected)

    wild = WildDetector({"kind": "linear", "layers": [12]})
    head = {f"head.{k}": v for k, v in wild.head.state_dict().items()}
    rec = Record("wild", {"head": {"kind": "linear", "layers": [12]}}, input_size=224,
                     backbone={"name": "clip_vit_b16", "weights_sha256": brec.weights_sha256})
    save_checkpoint(tmp_path / "wild", None, rec, state=head)
    assert (tmp_path / "wild.safetensors").stat().st_size < 100_000  # the head ships without the backbone
    model, _ = load_checkpoint(tmp_path / "wild")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        e, cls = loaded.forward_tokens(x, (12,))
        assert torch.allclose(model(x), wild.head(wild.head.features(e, cls)), atol=1e-5)

    rec.backbone["weights_sha256"] = "0" * 64  # a head trained on another backbone is refused
    save_checkpoint(tmp_path / "wild", None, rec, state=head)
    with pytest.raises(CheckpointError, match="trained on backbone"):
        load_checkpoint(tmp_path / "wild")


def test_shipped_backbone_records_its_source_licence_and_verification():
    rec = read_record(detector.predict.CHECKPOINT_DIR / "clip_vit_b16")
    prov = rec.provenance
    assert prov["source"]["sha256"] == "3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de"
    assert prov["source"]["onnx_sha256"] == "2d2da5e254d60501f138004788497e280fd80eb9dd877241aec41761be285d8d"
    assert prov["upstream"]["revision"] == "57c216476eefef5ab752ec549e440a49ae4ae5f3" and "MIT" in prov["licence"]
    assert rec.verification["images"] >= 16 and rec.verification["cosine_median"] > 0.95
    assert "clip_vit_b16" not in detector.shipped_models()  # a backbone is not offered as a detector


@pytest.mark.parametrize("size,model", [((32, 32), CIFAKE_MODEL), ((64, 48), CIFAKE_MODEL), ((65, 65), WILD_MODEL),
                                        ((1125, 1125), WILD_MODEL), ((1, 2000), WILD_MODEL)])
def test_choose_track_by_size(size, model):
    name, reason = choose_track(size)
    assert name == model and f"{size[0]}x{size[1]}" in reason


def test_auto_predictor_names_the_model_and_why():
    class Fixed:  # a stand-in predictor: the routing is under test, not a model
        def __init__(self, name, p):
            self.name, self.p = name, p

        def predict(self, src):
            return self.p

        def label(self, p):
            return "fake" if p >= 0.5 else "real"

        def verdict(self, p):
            return Verdict(self.label(p), self.label(p), p, 0.5, (0.35, 0.65), "", "")

    auto = AutoPredictor(loaded={CIFAKE_MODEL: Fixed(CIFAKE_MODEL, 0.2), WILD_MODEL: Fixed(WILD_MODEL, 0.9)})
    small, large = np.zeros((32, 32, 3), np.uint8), np.zeros((300, 400, 3), np.uint8)
    out = auto.judge([small, large])
    assert [o["model"] for o in out] == [CIFAKE_MODEL, WILD_MODEL] and [o["label"] for o in out] == ["real", "fake"]
    assert "400x300" in out[1]["reason"] and "CIFAKE" in out[0]["reason"]
    assert auto.predict(large) == 0.9
    # One owner of the fallback: a missing track default's images go to the fallback, and the reason says so.
    partial = AutoPredictor(loaded={CIFAKE_MODEL: Fixed(CIFAKE_MODEL, 0.2)}, fallback=CIFAKE_MODEL, load_missing=False)
    pred, reason = partial.pick(large)
    assert pred.name == CIFAKE_MODEL and f"`{WILD_MODEL}` is not loaded, so `{CIFAKE_MODEL}` judged it" in reason
    assert partial.pick(large, CIFAKE_MODEL)[1] == f"`{CIFAKE_MODEL}` was chosen by hand"


def test_tile_boxes_stay_inside_and_respect_the_budget():
    assert tile_boxes(200, 3000, 224, 6) == []  # narrower than one tile: no tile map
    for w, h, n in ((4000, 3000, 6), (1125, 1125, 4), (448, 2000, 4), (224, 224, 9)):
        boxes = tile_boxes(w, h, 224, n)
        assert 1 <= len(boxes) <= n
        assert all(0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h and x1 - x0 == y1 - y0 == 224 for x0, y0, x1, y1 in boxes)
    assert len(set(tile_boxes(4000, 3000, 224, 6))) == 6


def test_tiles_that_cannot_cover_the_image_cover_its_centre():
    for w, h in ((1200, 800), (4000, 3000), (3000, 1000)):
        boxes = tile_boxes(w, h, 224, 4)
        assert any(x0 <= w // 2 < x1 and y0 <= h // 2 < y1 for x0, y0, x1, y1 in boxes), (w, h, boxes)
    assert tile_boxes(448, 448, 224, 4) == [(0, 0, 224, 224), (224, 0, 448, 224), (0, 224, 224, 448), (224, 224, 448, 448)]


def test_the_tile_overlay_tints_only_the_tiles_in_the_legend_colours():
    from detector.explain import p_colour, tile_overlay

    grey = np.full((100, 200, 3), 128, np.uint8)
    out = tile_overlay(grey, [{"box": (0, 0, 50, 50), "p_fake": 1.0}, {"box": (100, 0, 150, 50), "p_fake": 0.0}], (200, 100))
    assert (out[60:, :] == 128).all() and (out[:, 60:90] == 128).all()  # outside the tiles: untouched
    red, blue = out[45, 5].astype(int), out[45, 105].astype(int)  # inside each tile, away from outline and number
    assert red[0] > red[2] + 40 and blue[2] > blue[0] + 40
    assert p_colour(0.0)[2] > p_colour(0.0)[1] and p_colour(1.0)[0] > p_colour(1.0)[1]  # blue, red: no teal or yellow


def test_tile_map_scores_native_resolution_crops():
    class MeanRed:  # P(fake) = the tile's mean red level: shows which pixels each tile saw
        input_size = 224

        def predict_arrays(self, arrays):
            return arrays[..., 0].mean(axis=(1, 2)) / 255

    img = np.zeros((448, 896, 3), np.uint8)
    img[:, 448:, 0] = 255  # right half red
    tiles = tile_map(MeanRed(), Image.fromarray(img), max_tiles=8)
    assert len(tiles) == 8
    for t in tiles:
        x0 = t["box"][0]
        assert t["p_fake"] == pytest.approx(1.0 if x0 >= 448 else 0.0)


def test_training_view_is_seeded_and_format_controlled_view_is_jpeg_512():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8))
    a = np.asarray(augmented(img, np.random.default_rng(1)))
    b = np.asarray(augmented(img, np.random.default_rng(1)))
    assert np.array_equal(a, b)
    fc = format_controlled(img)
    assert fc.size == (512, 512)
    buf = io.BytesIO()
    fc.save(buf, "PNG")  # decodable, plain RGB
    assert fc.mode == "RGB"


def test_guarded_threshold_keeps_real_accuracy():
    y = np.array([0] * 10 + [1] * 10)
    p = np.r_[np.linspace(0.0, 0.6, 10), np.linspace(0.3, 1.0, 10)]
    t = choose_threshold_guarded(y, p, min_real_accuracy=1.0)
    assert (p[y == 0] < t).all()  # every real called real
    t2 = choose_threshold_guarded(y, p, min_real_accuracy=0.5)
    assert t2 <= t


def test_cross_validation_threshold_holds_in_every_group_and_is_the_lowest_that_does():
    from train.wild_cv import holding_threshold, per_group

    rng = np.random.default_rng(0)
    g = np.array(["a"] * 200 + ["b"] * 200 + ["c"] * 100)
    y = np.array([0] * 100 + [1] * 100 + [0] * 200 + [1] * 100)
    p = np.where(y == 1, rng.uniform(0.3, 1.0, len(y)), rng.uniform(0.0, 0.6, len(y)))
    p[(g == "b")] += 0.3  # group b's real photos look faker: the threshold must hold for them too
    t = holding_threshold(y, p, g)
    rows = per_group(y, p, g, t)
    assert all(r["real_called_real"] >= 0.90 for r in rows.values() if r["n_real"])
    lower = per_group(y, p, g, t - 1e-6)
    assert min(r["real_called_real"] for r in lower.values() if r["n_real"]) < 0.90


def test_a_one_class_group_is_ranked_against_the_other_class_elsewhere():
    from train.wild_cv import group_auc, sample_weights
    from train.wild_data import WildItem

    y = np.array([0] * 30 + [1] * 30 + [0] * 30)
    g = np.array(["mixed"] * 60 + ["reals"] * 30)
    s = np.r_[np.zeros(30), np.ones(30), np.full(30, 2.0)]  # the real-only group scores above every fake
    assert group_auc(y, s, g, "reals") == 0.0 and group_auc(y, s, g, "mixed") == 1.0
    items = [WildItem("x", int(lab), src, "gen", "train", Path("."), "grp")
             for lab, src in [(0, "big")] * 90 + [(0, "small")] * 10 + [(1, "f")] * 25]
    w = sample_weights(items)
    labels = np.array([it.label for it in items])
    assert w[labels == 0].sum() == pytest.approx(w[labels == 1].sum())  # the classes weigh the same
    assert w[90] / w[0] == pytest.approx(3.0)  # 1/sqrt(10) against 1/sqrt(90): a small source is not drowned


def test_the_tile_map_judges_the_image_at_its_own_size():
    """The display copy is made from the decoded image: shrinking it must not shrink what the tiles see."""
    from detector.analysis import analyse
    from detector.predict import AutoPredictor

    router = AutoPredictor()
    src = str(ROOT / "assets" / "examples" / "wild_fake_flux.jpg")  # a 1024x1024 RGB JPEG
    pred, _ = router.pick(src)
    a = analyse(pred, src, router.explainer(pred), with_stats=False, with_evidence=False)
    assert a.size == (1024, 1024) and [t["box"] for t in a.tiles] == tile_boxes(1024, 1024, 224, 4)
    full = Image.open(src).convert("RGB")
    want = pred.predict_arrays(np.stack([np.asarray(full.crop(t["box"])) for t in a.tiles]))
    assert [t["p_fake"] for t in a.tiles] == pytest.approx(want.tolist(), abs=1e-5)
