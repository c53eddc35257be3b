"""Self-describing checkpoints: ``NAME.safetensors`` (weights) + ``NAME.json`` (the record).

The record holds everything needed to rebuild and use the model: architecture and its arguments,
input size, normalisation, classes, threshold, temperature, training arguments, data fingerprint,
metrics, library versions and the SHA-256 of the weights file, so a mismatched or tampered pair is
refused. Nothing is ever unpickled. Every write goes to a temporary file that is renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from .int8 import choose_precision
from .models import create_model
from .record import FORMAT, Record

log = logging.getLogger(__name__)

_UMASK = os.umask(0)  # read once (os.umask can only be read by setting it), then restored
os.umask(_UMASK)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, truncated or does not match its record."""


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def resolve(path: str | os.PathLike) -> tuple[Path, Path]:
    """``x``, ``x.json`` or ``x.safetensors`` -> (weights path, record path)."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


INT8_SCALE = ".int8_scale"  # key suffix of the per-output-channel scale of an int8-stored weight


def dequantize(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """int8 weights stored with a per-row scale (``W = q * scale[:, None]``) -> float32; others pass."""
    out = {}
    for k, v in state.items():
        if k.endswith(INT8_SCALE):
            continue
        scale = state.get(k + INT8_SCALE)
        if scale is not None:
            if v.dtype != torch.int8 or scale.shape != v.shape[:1]:
                raise CheckpointError(f"tensor {k!r}: int8 storage needs an int8 matrix and one scale per row")
            v = v.float() * scale.float().view(-1, *([1] * (v.dim() - 1)))
        out[k] = v
    return out


def save_checkpoint(path: str | os.PathLike, model: nn.Module | None, record: Record, half: bool = False,
                    state: dict[str, torch.Tensor] | None = None, storage: str | None = None) -> Record:
    """Write weights and record atomically; returns the record as written (with the weights hash).

    ``half`` stores large float tensors (conv and dense weights) as float16, halving the file; small
    tensors (biases, BatchNorm statistics) stay float32. Loading casts back to the model's float32.
    ``state`` (instead of ``model``) writes prepared tensors, e.g. int8 weights with ``INT8_SCALE``
    partners; ``storage`` then says in words how they are stored.
    """
    wpath, rpath = resolve(path)
    if state is None:
        state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    if half:
        state = {k: v.half() if v.dtype == torch.float32 and v.numel() > 1024 else v for k, v in state.items()}
    blob = st_save(state, metadata={"format": FORMAT, "arch": record.arch})
    storage = storage or ("float16 for tensors over 1024 values" if half else "float32")
    record = record.replace(weights_sha256=hashlib.sha256(blob).hexdigest(), weights_file=wpath.name,
                            weights_storage=storage)
    atomic_write(wpath, blob)
    atomic_write_json(rpath, record.to_dict())
    return record


def read_record(path: str | os.PathLike) -> Record:
    _, rpath = resolve(path)
    try:
        raw = json.loads(rpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint record not found: {rpath}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint record {rpath} is not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{rpath} is not a {FORMAT} record")
    try:
        return Record.from_dict(raw)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{rpath}: {e}") from None


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, half: bool = False, **fields) -> Record:
    """Copy a verified checkpoint to ``dst`` (e.g. to ship a run's best epoch), with ``fields`` set."""
    # verifies hash and architecture before anything is written; float32 whatever the environment asks, so
    # the copy holds the model's own tensors
    model, record = load_checkpoint(src, precision="float32")
    return save_checkpoint(dst, model, record.replace(**fields), half=half)


def update_record(path: str | os.PathLike, **fields) -> Record:
    """Rewrite a checkpoint's JSON record with ``fields`` changed; the weights are untouched."""
    record = read_record(path).replace(**fields)
    atomic_write_json(resolve(path)[1], record.to_dict())
    return record


def read_weights(path: str | os.PathLike, record: Record | None = None, dequantise: bool = True
                 ) -> dict[str, torch.Tensor]:
    """The float tensors of a checkpoint, verified against its record's SHA-256 (int8 storage dequantised,
    unless ``dequantise`` is False: then int8 matrices come with their ``INT8_SCALE`` partners).

    A record that names a ``backbone`` (another checkpoint beside it, by name and SHA-256) gets that
    checkpoint's tensors too, under the prefix ``backbone.``: a head ships without copying the
    backbone's weights.
    """
    wpath, rpath = resolve(path)
    record = read_record(path) if record is None else record
    try:
        blob = wpath.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"weights file not found: {wpath} (named by {rpath})") from None
    digest = hashlib.sha256(blob).hexdigest()
    if record.weights_sha256 and digest != record.weights_sha256:
        raise CheckpointError(f"{wpath} does not match its record {rpath}: SHA-256 {digest[:12]}... != "
                              f"{record.weights_sha256[:12]}...; the file is truncated, corrupt or from "
                              "another checkpoint")
    try:
        state = st_load(blob)
        if dequantise:
            state = dequantize(state)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{wpath} is not a valid safetensors file ({e})") from None
    backbone = record.backbone
    if backbone:
        bpath = wpath.with_name(backbone["name"])
        brecord = read_record(bpath)
        if brecord.weights_sha256 != backbone.get("weights_sha256"):
            raise CheckpointError(f"{rpath} was trained on backbone {backbone['name']} with weights SHA-256 "
                                  f"{str(backbone.get('weights_sha256'))[:12]}..., but {bpath}.json describes "
                                  f"{str(brecord.weights_sha256)[:12]}...")
        state.update({f"backbone.{k}": v for k, v in read_weights(bpath, brecord, dequantise).items()})
    return state


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu", precision: str | None = None
                    ) -> tuple[nn.Module, Record]:
    """Rebuild the model from its record and load its weights; raises CheckpointError on any mismatch.

    A model with a backbone runs it in ``precision`` (see :func:`detector.int8.choose_precision`: the
    argument, ``DETECTOR_BACKBONE_PRECISION``, or the record's ``backbone_precision``; float32 by default).
    When the int8 backbone cannot be built, the float32 one is kept and a warning says why.
    """
    wpath, rpath = resolve(path)
    record = read_record(path)
    try:
        want = choose_precision(record, precision)
    except ValueError as e:
        raise CheckpointError(f"{rpath}: {e}") from None
    stored = read_weights(path, record, dequantise=False)
    state = dequantize(stored)
    try:
        model = create_model(record.arch, **record.arch_kwargs)
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{rpath}: cannot build the model it describes ({e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "state mismatch"
        raise CheckpointError(f"{wpath}: weights do not fit architecture {record.arch!r} ({first})") from None
    model.to(map_location).eval()
    if want == "int8" and hasattr(model, "backbone"):
        _use_int8_backbone(model, stored, record)
    return model, record


def _use_int8_backbone(model: nn.Module, stored: dict[str, torch.Tensor], record: Record) -> None:
    """Swap ``model.backbone`` for the int8 ONNX Runtime one built from the stored int8 weights; on any
    failure keep float32 and log why (``model.backbone.precision`` says which one runs)."""
    int8 = {k[len("backbone."):]: (v, stored[k + INT8_SCALE]) for k, v in stored.items()
            if k.startswith("backbone.") and k + INT8_SCALE in stored}
    try:
        if not int8:
            raise ValueError("the backbone's weights are not stored as int8")
        from .int8 import int8_backbone  # onnxruntime is imported only when int8 is asked for

        sha = (record.backbone or {}).get("weights_sha256") or record.weights_sha256 or ""
        model.backbone = int8_backbone(model.backbone, int8, sha)
    except Exception as e:  # onnxruntime missing, an export that fails: the float32 backbone still works
        log.warning("int8 backbone unavailable (%s: %s); running it in float32", type(e).__name__, e)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


# --- training state (optimizer, scheduler, RNG) for --resume, also without pickle ---------------

def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = prefix or "t"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"cannot store dict keys of types {set(type(k) for k in obj)}")
        return {"__dict__": [[k, _flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a training state")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(path: str | os.PathLike, state: dict) -> None:
    """Save nested training state (dicts, lists, numbers, tensors) as safetensors + JSON skeleton."""
    wpath, rpath = resolve(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    blob = st_save(tensors) if tensors else st_save({"_empty": torch.zeros(0)})
    atomic_write(wpath, blob)
    atomic_write_json(rpath, {"format": FORMAT + "/state", "weights_sha256": hashlib.sha256(blob).hexdigest(),
                              "state": skeleton})


def load_state(path: str | os.PathLike) -> dict:
    wpath, rpath = resolve(path)
    try:
        rec = json.loads(rpath.read_text(encoding="utf-8"))
        blob = wpath.read_bytes()
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read training state {rpath} ({e})") from None
    if hashlib.sha256(blob).hexdigest() != rec.get("weights_sha256"):
        raise CheckpointError(f"training state {wpath} does not match {rpath} (truncated or corrupt)")
    return _unflatten(rec["state"], st_load(blob))
