"""int8 inference of the wild track's CLIP backbone: ONNX Runtime, with our checkpoint's own int8 weights.

    model, record = load_checkpoint("checkpoints/wild")          # the record says "backbone_precision": "int8"
    model, record = load_checkpoint("checkpoints/wild", precision="float32")   # or DETECTOR_BACKBONE_PRECISION

The float32 backbone (timm) is exported to ONNX with torch's exporter, and every linear layer whose
weights the checkpoint stores as int8 is rewritten to integer arithmetic (``MatMulInteger``) with the
checkpoint's int8 values and per-row scales: nothing is quantised again, the weights are exactly the
ones the float32 model dequantises. Activations are quantised on the fly to 8 bits, one scale and
offset per token (see :func:`quantise`). The graph is built once per weights file (about half a minute)
and cached under ``~/.cache/fakespot/onnx/``, never in the work tree.

Why this way (measured on the wild validation split; the figures are in the README's speed section):
- ONNX Runtime, not ``torch.ao.quantization.quantize_dynamic``: that API is deprecated, and on x86 its
  kernels quantise activations to 7 bits, which moved CLIP's embedding far from float32 (cosine 0.80).
- One scale per token, not per tensor (ONNX's ``DynamicQuantizeLinear``): CLIP's activations have a few
  huge outliers, and with one scale per tensor the embedding's cosine with float32 was 0.98 and 2-3% of
  the verdicts changed.
- The int8 weights are handed to ONNX Runtime as uint8 (``q + 128`` with zero point 128, the same
  numbers). On CPUs without AVX-512 VNNI its uint8 x int8 kernel adds pairs of products in 16 bits,
  which CLIP's activations overflow (cosine 0.51); the uint8 x uint8 kernel does not overflow.

ONNX Runtime gives no gradients, so Grad-CAM explains a float32 copy of the model
(``Predictor.float32_model``); the verdict stays the int8 model's.

``onnx``, ``onnxruntime`` and ``onnxscript`` (torch.onnx's exporter) are in ``requirements.txt`` but imported
only when int8 is asked for; without them the model loads in float32 with a warning.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .record import Record

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "int8")
PRECISION_ENV = "DETECTOR_BACKBONE_PRECISION"  # overrides a record's "backbone_precision"
CACHE_ENV = "DETECTOR_ONNX_CACHE"  # where built graphs are kept (default ~/.cache/fakespot/onnx)
GRAPH_VERSION = 3  # bump when the graph built here changes, so cached graphs are rebuilt
REQUIREMENTS = "requirements.txt"  # names the packages below


def optional(module: str):
    """Import one of the int8 path's optional packages, or raise ImportError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"the int8 backbone needs {module} ({e}); install the int8 packages with "
                          f"`pip install -r {REQUIREMENTS}`, or load the model in float32") from None


def choose_precision(record: Record, precision: str | None = None) -> str:
    """The backbone precision to load: ``precision`` if given, else ``DETECTOR_BACKBONE_PRECISION``, else
    the record's ``backbone_precision``; float32 when none says."""
    for value, where in ((precision, "the precision argument"), (os.environ.get(PRECISION_ENV), PRECISION_ENV),
                         (record.backbone_precision, "the record's backbone_precision")):
        if value:
            if value not in PRECISIONS:
                raise ValueError(f"backbone precision {value!r} (from {where}) is not one of {', '.join(PRECISIONS)}")
            return value
    return "float32"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fakespot" / "onnx"


class Int8Backbone(nn.Module):
    """:class:`~detector.models.ClipViTB16`'s ``forward_tokens`` run by an ONNX Runtime session of the int8
    graph. It has no parameters and gives no gradients. Sessions are thread-safe, so concurrent
    predictions share them."""

    precision = "int8"

    def __init__(self, graph: bytes, threads: int | None = None) -> None:
        super().__init__()
        self.graph = graph
        self.threads = threads or torch.get_num_threads()  # as many threads as torch uses
        self.session = self._session(self.threads)  # one image: all threads on it
        self._lanes: list | None = None  # batches: one single-thread session per thread, made on first use
        self._lock = threading.Lock()
        self.widths = [o.shape[-1] for o in self.session.get_outputs()]  # embedding, class token

    def _session(self, threads: int):
        ort = optional("onnxruntime")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(self.graph, opts, providers=["CPUExecutionProvider"])

    def lanes(self) -> list:
        """``threads`` single-thread sessions, each running a share of a batch's images side by side: an image's
        matrices are small, so two threads on one image wait on each other, and two images on two threads
        do not (4.0-4.5 images/s against 3.1-3.6 on 2 cores, 2026-12-02). Each holds its own copy of the graph (90 MB)."""
        with self._lock:
            if self._lanes is None:
                self._lanes = [self._session(1) for _ in range(self.threads)]
        return self._lanes

    def forward_tokens(self, x: torch.Tensor, layers: tuple[int, ...] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Embeddings plus the class token after each block in ``layers`` (1-based), as the float32 model.

        Activations are quantised per token, so an image's answer does not depend on its batch or its lane.
        Images run one per session call (4.4 images/s against 3.6-3.8 for one call on 16: the per-token
        arithmetic on a whole batch's activations leaves the caches); a batch is shared among
        :meth:`lanes`, one image at a time each.
        """
        pixels = x.detach().float().contiguous().cpu().numpy()
        if len(pixels) == 0:
            return torch.zeros(0, self.widths[0]), [torch.zeros(0, self.widths[1]) for _ in layers]

        def run(session, idx):  # one image per call, in order
            return [session.run(None, {"pixels": pixels[i:i + 1]}) for i in idx]

        if len(pixels) == 1 or self.threads == 1:
            runs = run(self.session, range(len(pixels)))
        else:
            lanes = self.lanes()
            chunks = np.array_split(np.arange(len(pixels)), min(len(lanes), len(pixels)))
            with ThreadPoolExecutor(len(chunks)) as pool:  # ONNX Runtime releases the GIL while it runs
                runs = [r for part in pool.map(run, lanes, chunks) for r in part]
        embed, cls = (np.concatenate(parts) for parts in zip(*runs))
        return torch.from_numpy(embed), [torch.from_numpy(cls[:, i - 1]) for i in layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x)[0]

    def cam_layers(self) -> list[nn.Module]:
        raise TypeError("the int8 backbone runs in ONNX Runtime and has no gradients: explain a float32 copy "
                        "(Predictor.float32_model)")


class _Tokens(nn.Module):
    """What the graph computes: the embedding and the class token after every block, (N, 512), (N, 12, 768)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embed, cls = self.backbone.forward_tokens(x, tuple(range(1, len(self.backbone.vit.blocks) + 1)))
        return embed, torch.stack(cls, 1)


def export_float(backbone: nn.Module, size: int = 224):
    """The float32 backbone as an ONNX ModelProto (inputs ``pixels``; outputs ``embed``, ``cls``), batch dynamic."""
    optional("onnxscript")  # the exporter's own dependency: a clear message instead of torch's
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on tracing; the result is checked by the tests
        program = torch.onnx.export(_Tokens(backbone).eval(), (torch.zeros(2, 3, size, size),), dynamo=True,
                                    input_names=["pixels"], output_names=["embed", "cls"],
                                    dynamic_shapes=({0: batch},), optimize=True, verbose=False)
    return program.model_proto


def quantise(model, int8: dict[str, tuple[torch.Tensor, torch.Tensor]]):
    """Rewrite every MatMul or Gemm whose weight is one of ``int8``'s matrices into integer arithmetic.

    ``int8`` maps a parameter name to its int8 values (out, in) and per-row scales (out,). The exporter
    renames (and transposes) weights, so they are found by value: the graph's float weight equals
    ``q * scale`` exactly. Every int8 matrix must be found exactly once.

    Each input row (one token) is quantised on its own: shifted by its minimum ``m`` to be non-negative,
    scaled to 0..255 (``QuantizeLinear``), multiplied with the weights by ``MatMulInteger`` (which takes
    one zero point per input, so the per-row offset is taken out before and put back after, exactly:
    ``W x = W (x - m) + m W 1``), and scaled back by the row's and the weight row's scales.
    """
    onnx = optional("onnx")
    from onnx import TensorProto, helper, numpy_helper

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    graph = model.graph
    by_value: dict[bytes, tuple[str, bool]] = {}  # digest of the float bytes -> (name, stored as (in, out))
    for name, (q, scale) in int8.items():
        w = (q.float() * scale.float()[:, None]).numpy()
        by_value[hashlib.sha256(np.ascontiguousarray(w.T).tobytes()).digest()] = (name, True)
        by_value[hashlib.sha256(np.ascontiguousarray(w).tobytes()).digest()] = (name, False)
    graph.initializer.extend([numpy_helper.from_array(np.array(255, np.float32), "int8/levels"),
                              numpy_helper.from_array(np.array(1e-12, np.float32), "int8/tiny"),
                              numpy_helper.from_array(np.array(1, np.float32), "int8/one"),
                              numpy_helper.from_array(np.array(0, np.uint8), "int8/zero"),
                              numpy_helper.from_array(np.array([-1], np.int64), "int8/last")])
    inits = {t.name: t for t in graph.initializer}

    def reduce(op: str, x: str, y: str):
        if opset >= 18:
            return helper.make_node(op, [x, "int8/last"], [y], keepdims=1)
        return helper.make_node(op, [x], [y], axes=[-1], keepdims=1)

    found: dict[str, str] = {}
    nodes, dropped = [], set()
    for node in graph.node:
        b = node.input[1] if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else None
        if b not in inits:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[b])
        hit = by_value.get(hashlib.sha256(np.ascontiguousarray(w).tobytes()).digest()) if w.dtype == np.float32 else None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if hit is None or (node.op_type == "Gemm" and (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0
                                                        or attrs.get("beta", 1.0) != 1.0)):
            nodes.append(node)
            continue
        name, in_out = hit
        if node.op_type == "Gemm" and in_out == bool(attrs.get("transB", 0)):  # Gemm's layout must agree
            nodes.append(node)
            continue
        if name in found:
            raise ValueError(f"int8 weight {name} is used by two nodes ({found[name]}, {node.name})")
        found[name] = node.name
        dropped.add(b)
        q, scale = int8[name]
        p, x, out = f"int8/{name}", node.input[0], node.output[0]
        graph.initializer.extend([
            # (in, out) uint8: q + 128 with zero point 128 is q exactly (the module docstring says why uint8)
            numpy_helper.from_array((q.numpy().astype(np.int16) + 128).astype(np.uint8).T.copy(), p + "/q"),
            numpy_helper.from_array(np.full(q.shape[0], 128, np.uint8), p + "/zero_point"),
            numpy_helper.from_array(scale.float().numpy(), p + "/scale"),
            numpy_helper.from_array((q.float() * scale.float()[:, None]).sum(1).numpy(), p + "/row_sums"),  # W 1
        ])
        nodes += [
            reduce("ReduceMin", x, p + "/min"),
            reduce("ReduceMax", x, p + "/max"),
            helper.make_node("Sub", [p + "/max", p + "/min"], [p + "/range"]),
            helper.make_node("Div", [p + "/range", "int8/levels"], [p + "/step0"]),
            helper.make_node("Max", [p + "/step0", "int8/tiny"], [p + "/step"]),  # a constant row: any step will do
            helper.make_node("Sub", [x, p + "/min"], [p + "/shifted"]),
            helper.make_node("Div", [p + "/shifted", p + "/step"], [p + "/levels"]),
            helper.make_node("QuantizeLinear", [p + "/levels", "int8/one", "int8/zero"], [p + "/xq"]),  # round, clip
            helper.make_node("MatMulInteger", [p + "/xq", p + "/q", "int8/zero", p + "/zero_point"], [p + "/i32"]),
            helper.make_node("Cast", [p + "/i32"], [p + "/f32"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [p + "/f32", p + "/step"], [p + "/y1"]),
            helper.make_node("Mul", [p + "/y1", p + "/scale"], [p + "/y2"]),
            helper.make_node("Mul", [p + "/min", p + "/row_sums"], [p + "/offset"]),
            helper.make_node("Add", [p + "/y2", p + "/offset"], [out if node.op_type == "MatMul" else p + "/y"]),
        ]
        if node.op_type == "Gemm":
            if len(node.input) > 2 and node.input[2]:
                nodes.append(helper.make_node("Add", [p + "/y", node.input[2]], [out]))
            else:
                nodes[-1].output[0] = out
    missing = sorted(set(int8) - set(found))
    if missing:
        raise ValueError(f"{len(missing)} int8 weights not found in the exported graph (first: {missing[0]})")
    still_used = {i for n in nodes for i in n.input}
    keep = [t for t in graph.initializer if t.name not in dropped or t.name in still_used]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    onnx.checker.check_model(model)
    return model


def build_graph(backbone: nn.Module, int8: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> bytes:
    """The serialised int8 ONNX graph of ``backbone`` (a float32 ClipViTB16 holding the dequantised weights)."""
    return quantise(export_float(backbone), int8).SerializeToString()


def int8_backbone(backbone: nn.Module, int8: dict[str, tuple[torch.Tensor, torch.Tensor]], weights_sha256: str,
                  folder: Path | None = None) -> Int8Backbone:
    """An :class:`Int8Backbone` for these weights: from the cache, or built (and cached when the folder is
    writable). ``weights_sha256`` (the backbone checkpoint's) names the cached graph, so a new weights
    file, graph version or torch gets a new graph."""
    optional("onnxruntime")  # needed either way: say so before any work
    folder = cache_dir() if folder is None else Path(folder)
    path = folder / f"clip_vit_b16-{weights_sha256[:16]}-g{GRAPH_VERSION}-torch{torch.__version__}.onnx"
    if path.exists():
        try:
            return Int8Backbone(path.read_bytes())
        except Exception as e:  # a damaged cache entry is rebuilt, not trusted
            log.warning("cached int8 graph %s is unusable (%s); building it again", path, e)
    for module in ("onnx", "onnxscript"):  # what building needs, checked before the export starts
        optional(module)
    log.info("building the int8 ONNX graph of the wild backbone (once per weights file) into %s", path)
    graph = build_graph(backbone, int8)
    try:
        from .checkpoint import atomic_write

        atomic_write(path, graph)
    except OSError as e:
        log.warning("could not cache the int8 graph at %s (%s); it will be built again next time", path, e)
    return Int8Backbone(graph)
