"""Where checkpoints come from: the local folder (``checkpoints/``, or ``DETECTOR_CHECKPOINTS``) or a pinned
Hugging Face Hub snapshot (``DETECTOR_HUB_REPO`` at ``DETECTOR_HUB_REVISION``).

``detector.predict`` imports these names back, so ``detector.predict.X`` still resolves; a test that
patches one must patch it here, where the functions read it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

from .checkpoint import CheckpointError, resolve
from .record import PARTS

log = logging.getLogger(__name__)

CHECKPOINT_DIR = Path(os.environ.get("DETECTOR_CHECKPOINTS", Path(__file__).resolve().parent.parent / "checkpoints"))
HUB_REPO_ENV = "DETECTOR_HUB_REPO"  # e.g. "our-org/fakespot": fetch checkpoints from the Hugging Face Hub
HUB_REVISION_ENV = "DETECTOR_HUB_REVISION"  # the commit of that repository to use (pinned); default "main"
CIFAKE_MODEL = "fakespot"  # the CIFAKE track's default: 32x32 images
WILD_MODEL = "wild"  # the wild track's default: photos and renders at their own size


def shipped_models(directory: str | os.PathLike = CHECKPOINT_DIR) -> list[str]:
    """Names of the detectors in ``directory``, the track defaults first (backbones are not detectors)."""
    names = [p.stem for p in sorted(Path(directory).glob("*.json"))
             if p.with_suffix(".safetensors").exists() and not is_backbone(p)]
    return sorted(names, key=lambda n: (n not in (WILD_MODEL, CIFAKE_MODEL), n != WILD_MODEL, n))


def is_backbone(record_path: str | os.PathLike) -> bool:
    """Whether a record describes a part of another model (a backbone or a fused signal: no P(fake) of its own
    for an image), so it is not offered as a detector."""
    try:
        return json.loads(Path(record_path).read_text(encoding="utf-8")).get("kind") in PARTS
    except (OSError, ValueError):
        return False  # a damaged record is listed; loading it gives the reason


def hub_settings() -> tuple[str | None, str]:
    """(repository, revision) of the Hub model repository the checkpoints come from, if one is set.

    ``DETECTOR_HUB_REVISION`` should be a commit hash: records and weights then come from one fixed
    snapshot. Unset, the moving ``main`` is used (and the app says so).
    """
    return os.environ.get(HUB_REPO_ENV) or None, os.environ.get(HUB_REVISION_ENV) or "main"


@functools.lru_cache(maxsize=8)
def hub_snapshot(repo_id: str, revision: str = "main") -> Path:
    """Every record and weight file of a Hub model repository at one revision, downloaded together
    (``snapshot_download``: one revision for all files, so a record is never paired with other weights).
    Returns the local folder; failures are not cached, so a later call tries again."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.md"]))


def checkpoint_dir(notes: list[str] | None = None) -> Path:
    """Where the checkpoints come from: the Hub snapshot when ``DETECTOR_HUB_REPO`` is set and it can
    be downloaded, otherwise the local ``checkpoints/`` (the reason is logged and added to ``notes``)."""
    repo, revision = hub_settings()
    if not repo:
        return CHECKPOINT_DIR
    try:
        return hub_snapshot(repo, revision)
    except Exception as e:  # offline, missing repository or revision, auth: fall back, loudly
        msg = (f"could not download the Hub repository {repo} at revision {revision} ({type(e).__name__}: {e}); "
               "using the local checkpoints")
        log.warning(msg)
        if notes is not None and msg not in notes:
            notes.append(msg)
        return CHECKPOINT_DIR


def resolve_model(name_or_path: str | os.PathLike | None = None, notes: list[str] | None = None) -> Path:
    """A shipped model's name (from the Hub snapshot when DETECTOR_HUB_REPO is set), or a checkpoint path.

    A failed Hub download, or a snapshot without the model, falls back to the local checkpoint; the
    reason is logged and, when ``notes`` is given, appended to it (the app shows it).
    """
    name = str(name_or_path or CIFAKE_MODEL)
    wpath, rpath = resolve(name)
    if rpath.exists() or wpath.exists() or os.sep in name or name.endswith((".json", ".safetensors")):
        return rpath.with_suffix("")
    folder = checkpoint_dir(notes)
    if folder != CHECKPOINT_DIR:
        if (folder / f"{name}.json").exists():
            return folder / name
        repo, revision = hub_settings()
        msg = (f"the Hub repository {repo} at revision {revision} has no model {name!r} (it offers: "
               f"{', '.join(shipped_models(folder)) or 'none'}); using the local checkpoint")
        log.warning(msg)
        if notes is not None:
            notes.append(msg)
    local = CHECKPOINT_DIR / name
    if not local.with_suffix(".json").exists():
        available = ", ".join(shipped_models()) or "none found"
        raise CheckpointError(f"unknown model {name!r}: not a checkpoint path, and no {name}.json in "
                              f"{CHECKPOINT_DIR} (shipped models: {available})")
    return local
