"""The rules a push of this repository to a Hugging Face Space must pass, checked offline.

The Hub refuses files over 10 MB and binary files unless Git LFS/Xet stores them; the Space reads its
settings from the README's front matter. Here weights stay ordinary git blobs (no LFS server), so the
check is that `.gitattributes` would send every such file to LFS/Xet on the Hub, and that none of them
is an LFS pointer in this repository (a fresh clone would get the pointer, not the weights).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
HUB_MAX_BYTES = 10 * 1024 * 1024  # larger files need LFS/Xet
HUB_COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert m, "README.md must start with the Space's YAML front matter between --- lines"
    return yaml.safe_load(m.group(1))


def pinned(requirement: str) -> str:
    m = re.search(rf"^{re.escape(requirement)}(?:\[[\w,]+\])?==([^\s#]+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert m, f"requirements.txt must pin {requirement}==..."
    return m.group(1)


def test_front_matter_is_a_valid_space_config():
    fm = front_matter()
    assert fm["sdk"] == "gradio"
    assert str(fm["sdk_version"]) == pinned("gradio"), "the Space must run the Gradio the tests ran"
    assert (ROOT / fm["app_file"]).is_file()
    assert fm["colorFrom"] in HUB_COLORS and fm["colorTo"] in HUB_COLORS
    assert 0 < len(fm["short_description"]) <= 60
    assert fm["license"] == "mit"
    # quoted in the file: unquoted, YAML would read 3.10 as the number 3.1
    assert isinstance(fm["python_version"], str), "quote python_version in the front matter"
    assert re.search(r'^python_version: "\d+\.\d+"$', (ROOT / "README.md").read_text(), re.M)


def test_tests_run_on_the_python_the_space_runs():
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert front_matter()["python_version"] == here, (
        f"the Space runs Python {front_matter()['python_version']}, these tests run on {here}: "
        "change one so that what is tested is what is deployed")


def tracked_files() -> list[Path]:
    """What a clone holds: the list ``train.publish`` uploads to a Space."""
    from train.publish import tracked_files as listed

    try:
        return [ROOT / p for p in listed()]
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")


def lfs_on_the_hub(files: list[Path]) -> set[Path]:
    out = subprocess.run(["git", "check-attr", "-z", "filter", "--stdin"], cwd=ROOT, check=True, capture_output=True,
                         input="\0".join(str(f.relative_to(ROOT)) for f in files).encode() + b"\0" if files else b"").stdout
    fields = out.decode().split("\0")
    return {ROOT / fields[i] for i in range(0, len(fields) - 2, 3) if fields[i + 2] == "lfs"}


def is_binary(path: Path) -> bool:
    with path.open("rb") as f:
        return b"\0" in f.read(8000)  # git's own test


def test_every_large_or_binary_file_goes_to_lfs_on_the_hub():
    files = tracked_files()
    lfs = lfs_on_the_hub(files)
    big = [str(f.relative_to(ROOT)) for f in files if f.stat().st_size > HUB_MAX_BYTES and f not in lfs]
    binary = [str(f.relative_to(ROOT)) for f in files if f not in lfs and is_binary(f)]
    assert not big, f"over 10 MB and not matched by an LFS pattern in .gitattributes: {big}"
    assert not binary, f"binary files not matched by an LFS pattern in .gitattributes: {binary}"
    assert any(f.suffix == ".safetensors" for f in lfs), "the weights must be LFS files on the Hub"


def test_weights_here_are_real_blobs_not_lfs_pointers():
    weights = [f for f in tracked_files() if f.suffix == ".safetensors"]
    assert weights
    for f in weights:
        blob = subprocess.run(["git", "show", f"HEAD:{f.relative_to(ROOT)}"], cwd=ROOT, capture_output=True).stdout
        head = blob[:len(LFS_POINTER)] if blob else f.read_bytes()[:len(LFS_POINTER)]
        assert head != LFS_POINTER, f"{f.name} is an LFS pointer: this repository has no LFS server"


def test_the_hub_model_card_matches_the_records():
    from train.model_card import main

    assert main(["--check"]) == 0, "checkpoints/README.md is out of date: python -m train.model_card"


def test_layout_training_scripts_do_not_import_the_app():
    """train/ trains and ships models, studies/ holds the research studies, bench/ the benchmarks, load
    test and screenshot: only bench/ may start or import the app."""
    import ast

    for folder in ("train", "studies"):
        for path in sorted((ROOT / folder).glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
            assert "app" not in names, f"{path.relative_to(ROOT)} imports app.py: it belongs in bench/"


class FakeHfApi:
    """Records what would be uploaded, in place of huggingface_hub.HfApi."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create", repo_id, kw))

    def upload_folder(self, **kw):
        self.calls.append(("upload", kw["repo_id"], kw))
        return type("CommitInfo", (), {"oid": "c0ffee"})()


def test_publishing_the_space_uploads_what_git_tracks_and_nothing_else():
    from train.publish import publish

    tracked_files()  # skips outside a git checkout
    api = FakeHfApi()
    assert publish("space", "me/fakespot", api=api) == "c0ffee"
    (_, _, create), (_, _, up) = api.calls
    assert create["repo_type"] == "space" and create["space_sdk"] == "gradio"
    files = set(up["allow_patterns"])
    assert {"app.py", "requirements.txt", "README.md", ".gitattributes", "checkpoints/wild.safetensors"} <= files
    assert not any(f.startswith((".venv/", "data/", ".git/")) for f in files)


def test_publishing_the_models_uploads_records_weights_and_card():
    from train.publish import publish

    api = FakeHfApi()
    publish("models", "me/fakespot-models", api=api)
    up = api.calls[1][2]
    assert up["repo_type"] == "model" and up["folder_path"].endswith("checkpoints")
    assert {"README.md", "wild.json", "wild.safetensors", "clip_vit_b16.safetensors"} <= set(up["allow_patterns"])
