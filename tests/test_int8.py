"""The wild backbone's int8 path (detector/int8.py): same answers as float32 within a tolerance, the
checkpoint's own int8 values, the precision option and the float32 fallback, and Grad-CAM on float32."""

import logging
import sys
from importlib.util import find_spec

import numpy as np
import pytest
import torch

import detector
from detector import int8
from detector.__main__ import get_args_parser
from detector.analysis import analyse
from detector.checkpoint import INT8_SCALE, CheckpointError, load_checkpoint, save_checkpoint
from detector.explain import Explainer
from detector.int8 import Int8Backbone, choose_precision, int8_backbone
from detector.models import ClipViTB16, WildDetector
from detector.predict import Predictor
from detector.record import Record

# The int8 packages (onnx, onnxruntime, onnxscript of requirements.txt): tests that build or run a graph need them, the rest do not.
MISSING = [m for m in ("onnx", "onnxruntime", "onnxscript") if find_spec(m) is None]
needs_onnx = pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not installed (requirements.txt)")


def int8_state(module: torch.nn.Module) -> tuple[dict, dict]:
    """Float weights rounded to int8 rows with scales, as train.import_clip stores CLIP: (state, int8 parts)."""
    state, parts = {}, {}
    for k, v in module.state_dict().items():
        if v.dim() == 2 and k.endswith(".weight"):
            scale = v.abs().amax(1) / 127
            q = torch.round(v / scale[:, None]).to(torch.int8)
            state[k], state[k + INT8_SCALE], parts[k] = q, scale, (q, scale)
            v = q.float() * scale[:, None]
        state.setdefault(k, v.clone())
    return state, parts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A two-block CLIP tower with int8-stored weights, its float32 twin and its int8 graph."""
    torch.manual_seed(0)
    tower = ClipViTB16(depth=2, embed_dim=64, num_heads=2).eval()
    state, parts = int8_state(tower)
    tower.load_state_dict({k: v for k, v in state.items() if not k.endswith(INT8_SCALE)} | {
        k: q.float() * s[:, None] for k, (q, s) in parts.items()})
    folder = tmp_path_factory.mktemp("onnx")
    return tower, parts, int8_backbone(tower, parts, "ab" * 32, folder), folder


@needs_onnx
def test_int8_agrees_with_float32_on_random_inputs(tiny):
    tower, _, fast, _ = tiny
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        e32, c32 = tower.forward_tokens(x, (1, 2))
    e8, c8 = fast.forward_tokens(x, (1, 2))
    cos = lambda a, b: torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert e8.shape == e32.shape and [c.shape for c in c8] == [c.shape for c in c32]
    assert cos(e8, e32).min() > 0.99 and all(cos(a, b).min() > 0.99 for a, b in zip(c8, c32))
    assert not torch.equal(e8, e32)  # int8 arithmetic really ran
    # activations are quantised per token: an image's answer does not depend on the others in its batch
    alone = torch.cat([fast.forward_tokens(x[i:i + 1])[0] for i in range(3)])
    assert torch.allclose(alone, e8, atol=1e-5)


@needs_onnx
def test_a_batch_shared_among_single_thread_lanes_keeps_its_order_and_answers(tiny):
    graph = tiny[2].graph
    x = torch.randn(5, 3, 224, 224)  # 5 images on 2 and 3 lanes: uneven shares
    one = Int8Backbone(graph, threads=1)
    ref, ref_cls = one.forward_tokens(x, (2,))
    assert one._lanes is None  # one thread: the main session, no lanes made
    for threads in (2, 3):
        fast = Int8Backbone(graph, threads=threads)
        embed, cls = fast.forward_tokens(x, (2,))
        assert len(fast.lanes()) == threads
        assert torch.allclose(embed, ref, atol=1e-5) and torch.allclose(cls[0], ref_cls[0], atol=1e-5)
    assert Int8Backbone(graph, threads=2).forward_tokens(x[:0])[0].shape == (0, ref.shape[1])


@needs_onnx
def test_graph_holds_the_checkpoints_own_int8_values_and_is_cached(tiny):
    import onnx
    from onnx import numpy_helper

    _, parts, _, folder = tiny
    files = list(folder.glob("*.onnx"))
    assert len(files) == 1 and "abababababababab" in files[0].name
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(files[0]).graph.initializer}
    for name, (q, scale) in parts.items():
        stored = init[f"int8/{name}/q"].astype(np.int16) - init[f"int8/{name}/zero_point"].astype(np.int16)[None]
        assert np.array_equal(stored.T, q.numpy()) and np.array_equal(init[f"int8/{name}/scale"], scale.numpy())
    shapes = {tuple(q.shape) for q, _ in parts.values()} | {tuple(q.shape[::-1]) for q, _ in parts.values()}
    assert not [n for n, v in init.items() if v.dtype == np.float32 and v.shape in shapes]  # no float copy left
    calls = []
    original = int8.build_graph
    int8.build_graph = lambda *a: calls.append(a) or original(*a)
    try:
        int8_backbone(tiny[0], parts, "ab" * 32, folder)  # from the cache: nothing is built
    finally:
        int8.build_graph = original
    assert calls == []


def test_precision_comes_from_argument_then_environment_then_record(monkeypatch):
    monkeypatch.delenv(int8.PRECISION_ENV, raising=False)
    assert choose_precision(Record("wild")) == "float32"  # the default while the record says nothing
    assert choose_precision(Record("wild", backbone_precision="int8")) == "int8"
    monkeypatch.setenv(int8.PRECISION_ENV, "float32")
    assert choose_precision(Record("wild", backbone_precision="int8")) == "float32"
    assert choose_precision(Record("wild", backbone_precision="float32"), "int8") == "int8"
    with pytest.raises(ValueError, match="not one of float32, int8"):
        choose_precision(Record("wild"), "int4")
    assert Record.from_dict(Record("wild", backbone_precision="int8").to_dict()).backbone_precision == "int8"
    for command in (["predict", "x.jpg"], ["scan", "x", "--out", "o.parquet"]):  # the CLI's option
        assert get_args_parser().parse_args(command + ["--precision", "int8"]).precision == "int8"
        assert get_args_parser().parse_args(command).precision is None


def test_a_missing_optional_package_says_how_to_install_it():
    with pytest.raises(ImportError, match="requirements.txt"):
        int8.optional("no_such_module_for_int8")


TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2}


@pytest.fixture(scope="module")
def wild_checkpoint(tmp_path_factory):
    """A wild checkpoint (random linear head) on a random int8-stored two-block backbone, recording int8."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    state, _ = int8_state(ClipViTB16(**TINY))
    brec = save_checkpoint(folder / "clip_vit_b16", None, Record("clip_vit_b16", TINY, kind="backbone"),
                           state=state, storage="int8")
    kwargs = {"head": {"kind": "linear", "layers": []}, "backbone": TINY}
    rec = Record("wild", kwargs, track="wild", input_size=224, mean=[0.5] * 3, std=[0.25] * 3,
                 backbone_precision="int8", backbone={"name": "clip_vit_b16", "weights_sha256": brec.weights_sha256})
    head = WildDetector(**kwargs).head.state_dict()
    save_checkpoint(folder / "wild", None, rec, state={f"head.{k}": v for k, v in head.items()})
    return folder / "wild", brec.weights_sha256


class ShiftedBackbone(torch.nn.Module):
    """A stand-in for the int8 backbone: the float32 tower with its embedding nudged, so its scores differ."""

    precision = "int8"

    def __init__(self, tower):
        super().__init__()
        self.tower = tower

    def forward_tokens(self, x, layers=()):
        with torch.no_grad():
            e, cls = self.tower.forward_tokens(x, layers)
        return e + 0.5, cls


def test_record_asks_for_int8_and_the_environment_can_refuse(wild_checkpoint, monkeypatch):
    stem, sha = wild_checkpoint
    seen = []
    monkeypatch.setattr(int8, "int8_backbone", lambda tower, parts, digest: seen.append((parts, digest)) or ShiftedBackbone(tower))
    monkeypatch.delenv(int8.PRECISION_ENV, raising=False)
    pred = detector.load(stem)
    assert pred.precision == "int8" and len(seen) == 1
    parts, digest = seen[0]
    assert digest == sha and len(parts) == 2 * 4 + 1 and all(q.dtype == torch.int8 for q, _ in parts.values())
    monkeypatch.setenv(int8.PRECISION_ENV, "float32")
    assert detector.load(stem).precision == "float32" and len(seen) == 1
    assert detector.load(stem, precision="int8").precision == "int8"
    monkeypatch.setenv(int8.PRECISION_ENV, "int4")  # a typo is an error that names the variable, not a silent float32
    with pytest.raises(CheckpointError, match=int8.PRECISION_ENV):
        detector.load(stem)


def test_a_failed_int8_build_falls_back_to_float32(wild_checkpoint, monkeypatch, caplog):
    def broken(*a):
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(int8, "int8_backbone", broken)
    with caplog.at_level(logging.WARNING):
        model, record = load_checkpoint(wild_checkpoint[0], precision="int8")
    assert model.backbone.precision == "float32" and record.backbone_precision == "int8"
    assert "no exporter here" in caplog.text and "float32" in caplog.text


def test_without_onnxruntime_int8_falls_back_to_float32_and_says_what_to_install(wild_checkpoint, monkeypatch,
                                                                                  caplog, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    monkeypatch.setenv(int8.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(int8, "build_graph", lambda *a: pytest.fail("nothing is built without a runtime to run it"))
    with caplog.at_level(logging.WARNING):
        pred = detector.load(wild_checkpoint[0], precision="int8")
    assert pred.precision == "float32" and "requirements.txt" in caplog.text


def test_explanations_use_float32_and_the_verdict_stays_the_int8_models(wild_checkpoint, monkeypatch):
    monkeypatch.setattr(int8, "int8_backbone", lambda tower, parts, digest: ShiftedBackbone(tower))
    pred = detector.load(wild_checkpoint[0], precision="int8")
    ex = Explainer(pred)
    assert ex.model.backbone.precision == "float32" and not ex.same_scores
    assert all(p.dtype == torch.float32 for p in ex.model.parameters())
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    a = analyse(pred, image, ex, with_stats=False, with_evidence=False)
    assert a.heatmaps["fake"].shape == (224, 224)
    assert a.p_fake == pytest.approx(float(pred.predict_arrays(image[None])[0]))  # the int8 model's P(fake)
    _, logit = ex.heatmaps_and_logit(image)
    assert abs(a.p_fake - float(1 / (1 + np.exp(-logit / pred.temperature)))) > 1e-6  # not the float32 copy's
    bare = Predictor(pred.model, pred.record)  # no checkpoint to reload float32 from: a clear error
    with pytest.raises(ValueError, match="cannot be explained"):
        bare.float32_model()


def test_int8_backbone_refuses_gradients():
    with pytest.raises(TypeError, match="no gradients"):
        Int8Backbone.cam_layers(object.__new__(Int8Backbone))
