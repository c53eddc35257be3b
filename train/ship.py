"""Ship a trained run: copy its best checkpoint into checkpoints/NAME and record the test metrics there.

    python -m train.ship --run runs/fakespot --name fakespot --test ../shared/data/cifake_test.zip

``--checkpoint last`` ships the run's final epoch instead of its lowest-validation-loss one; choose
between them on validation (each record holds its validation metrics), never on the test split.

The test figures (official split and --dedup split) are measured by train.evaluate and written into the
checkpoint's record under metrics.test and metrics.test_dedup; plots go to runs/eval/NAME.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from detector.checkpoint import copy_checkpoint
from detector.predict import CHECKPOINT_DIR
from train import evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="training output folder")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="which of the run's checkpoints to ship (default: best, the lowest validation loss)")
    p.add_argument("--name", required=True, help="shipped model name")
    p.add_argument("--test", required=True, nargs="+", help="test data (folder or zip)")
    p.add_argument("--dedup", default="auto", help="as train.evaluate --dedup")
    p.add_argument("--dir", default=str(CHECKPOINT_DIR))
    p.add_argument("--half", action="store_true", help="store large weight tensors as float16 (half the size)")
    args = p.parse_args()
    dst = Path(args.dir) / args.name
    rec = copy_checkpoint(Path(args.run) / args.checkpoint, dst, half=args.half, name=args.name)
    print(f"shipped {args.run}/{args.checkpoint} (epoch {rec.epoch}) as {dst}")
    evaluate.main(evaluate.get_args_parser().parse_args(
        ["--model", str(dst), "--data", *args.test, "--out", f"runs/eval/{args.name}", "--dedup", args.dedup,
         "--write-record", "test", "--no-progress"]))


if __name__ == "__main__":
    main()
