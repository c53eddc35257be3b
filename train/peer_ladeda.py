"""Score images with the peer detector Tiny-LaDeDa (Cavia et al. 2024, "Real-Time Deepfake Detection in the
Real-World"; 1,348 parameters, 9x9 patches, trained on WildRF), in its own virtual environment.

Its code and weights are under a non-commercial research licence: they are scored beside ours, never
committed or shipped. This file holds none of their code: it imports their model definition from the
directory given by ``--code`` (a checkout of barcavia/RealTime-DeepfakeDetection-in-the-RealWorld
@e734562bbb67) and loads ``--weights`` (default: that checkout's weights/Tiny_LaDeDa/WildRF_Tiny_LaDeDa.pth).

    python3 -m venv .ladeda && .ladeda/bin/pip install torch pillow numpy
    .ladeda/bin/python train/peer_ladeda.py --code DIR --list files.txt --out peer.csv

Preprocessing as their test protocol (test.py: no_resize False, no_crop True): the RGB image resized to
256x256 (PIL bilinear, as torchvision's Resize does on a PIL image), scaled to [0, 1], ImageNet-normalised;
the model applies its own ``right_diag`` gradient filter (their default ``tiny_preprocess``) and averages
its patch features; P(fake) = sigmoid(logit), read at 0.5 as in their validate.py.
Writes ``file,p_fake,verdict`` per line (verdict ``fake`` or ``real`` at 0.5). Files it cannot read get an
empty p_fake and the reason as the verdict. Runs with the standard library, torch, Pillow and numpy only.
"""

import os
import sys

from peer_common import arguments, score_files

SIZE = 256  # their --loadSize
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main() -> int:
    args = arguments(__doc__, code="directory of their repository (holds networks/Tiny_LaDeDa.py); required",
                     weights="default: CODE/weights/Tiny_LaDeDa/WildRF_Tiny_LaDeDa.pth")
    if not args.code:
        raise SystemExit("--code DIR is required")
    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sys.path.insert(0, os.path.abspath(args.code))
    from networks.Tiny_LaDeDa import tiny_ladeda

    model = tiny_ladeda(preprocess_type="right_diag")
    model.fc = torch.nn.Linear(8, 1)  # as their trainer: features_dim 8
    weights = args.weights or os.path.join(args.code, "weights", "Tiny_LaDeDa", "WildRF_Tiny_LaDeDa.pth")
    model.load_state_dict(torch.load(weights, map_location="cpu"), strict=True)
    model.eval()
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)

    @torch.inference_mode()
    def score(path: str) -> tuple[str, str]:
        with Image.open(path) as im:
            img = im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        prob = float(torch.sigmoid(model(((x - mean) / std)[None])).item())
        return f"{prob:.6f}", "fake" if prob > 0.5 else "real"

    return score_files(args.list, args.out, score)


if __name__ == "__main__":
    sys.exit(main())
