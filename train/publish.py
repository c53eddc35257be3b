"""Publish to the Hugging Face Hub: the app as a Space, or the checkpoints as a model repository.

    hf auth login                                                   # once: a token with write access
    python -m train.publish space  --repo YOU/fakespot              # the app (every file git tracks)
    python -m train.publish models --repo YOU/fakespot-models       # checkpoints/ with its model card

The upload goes through ``huggingface_hub`` (``upload_folder``), which stores the weights and images in
the Hub's large-file storage (Xet/LFS) as ``.gitattributes`` marks them, so the Hub's push rules (no file
over 10 MB, no binary file outside LFS/Xet) hold without an LFS migration of this repository's history.
``models`` prints the commit it made: set it as the Space's ``DETECTOR_HUB_REVISION`` (with
``DETECTOR_HUB_REPO``) so the Space loads exactly those records and weights.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tracked_files() -> list[str]:
    """Every file git tracks (what a clone holds): no virtual environment, data, cache or run folder."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).is_file()]


def model_files() -> list[str]:
    ckpt = ROOT / "checkpoints"
    return sorted(p.name for p in ckpt.iterdir() if p.suffix in (".json", ".safetensors") or p.name == "README.md")


def publish(kind: str, repo: str, private: bool = False, api=None) -> str:
    """Upload and return the new commit's id."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    if kind == "space":
        api.create_repo(repo, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo, repo_type="space", folder_path=str(ROOT), allow_patterns=tracked_files(),
                                 commit_message="fakespot app")
    elif kind == "models":
        from train.model_card import main as card

        if card(["--check"]) != 0:
            raise SystemExit("checkpoints/README.md is out of date: run python -m train.model_card first")
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo, repo_type="model", folder_path=str(ROOT / "checkpoints"),
                                 allow_patterns=model_files(), commit_message="fakespot checkpoints")
    else:
        raise ValueError(f"unknown kind {kind!r}; choose space or models")
    return getattr(info, "oid", None) or str(info)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["space", "models"])
    p.add_argument("--repo", required=True, help="OWNER/NAME on the Hub")
    p.add_argument("--private", action="store_true")
    args = p.parse_args(argv)
    commit = publish(args.kind, args.repo, args.private)
    print(f"uploaded to {args.repo}: commit {commit}")
    if args.kind == "models":
        print(f"in the Space's settings: DETECTOR_HUB_REPO={args.repo}  DETECTOR_HUB_REVISION={commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
