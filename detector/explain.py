"""Grad-CAM explanations (pytorch-grad-cam) and how much of a heatmap falls on the background.

    ex = Explainer(detector.load())
    maps = ex.heatmaps(image, method="GradCAM")            # {"fake": (S, S), "real": (S, S)} in [0, 1], S = input size
    fg = object_mask(image)                                # (S, S) bool, True on the main object
    background_share(maps["fake"], fg)                     # share of heatmap energy off the object

Target layers come from each model's ``cam_layers()``; nothing here knows a layer path. The target of
a map is a tiny callable, pytorch-grad-cam's ``BinaryClassifierOutputTarget``: +logit for "fake",
-logit for "real", which fits our one-logit models.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import torch
from pytorch_grad_cam import (EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, RandomCAM, ScoreCAM,
                              XGradCAM)
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

from .preprocess import CLASSES, normalize, to_batch, to_rgb

# Display name -> pytorch-grad-cam class. EigenCAM is class-agnostic (the same map for both classes).
CAM_METHODS = {
    "GradCAM": GradCAM,
    "GradCAM++": GradCAMPlusPlus,
    "HiResCAM": HiResCAM,
    "LayerCAM": LayerCAM,
    "XGradCAM": XGradCAM,
    "EigenCAM": EigenCAM,
    "ScoreCAM": ScoreCAM,
}
CLASS_AGNOSTIC = {"EigenCAM"}
# ScoreCAM runs one masked forward pass per feature channel per map. Past this many passes a request
# would hold a worker for many seconds (resnet50, 2,048 channels x 2 maps: 24 s measured on 2 cores;
# the wild ViT, 768 x 2 at 224 px: minutes), so the app refuses it with the reason.
SCORECAM_MAX_PASSES = 1024
FLOOR_METHOD = {"RandomCAM": RandomCAM}  # a baseline for faithfulness studies, not offered in the app


class ExplainError(ValueError):
    """An explanation that is refused, with the reason a user can act on (for example, too slow)."""


def cam_class(method: str):
    try:
        return {**CAM_METHODS, **FLOOR_METHOD}[method]
    except KeyError:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}") from None


class Explainer:
    """Grad-CAM for one predictor. Thread-safe: the CAM hooks live on a private copy of the model,
    and one lock serialises explanations, so concurrent predictions never see the hooks."""

    def __init__(self, predictor, max_scorecam_passes: int | None = SCORECAM_MAX_PASSES) -> None:
        """``max_scorecam_passes``: refuse ScoreCAM requests that would need more masked forward passes
        (None: no bound, for research scripts that mean to wait)."""
        self.predictor = predictor
        self.max_scorecam_passes = max_scorecam_passes
        self._channels: int | None = None
        # A float32 copy: hooks stay off the predictor's model, and an int8 backbone has no gradients.
        self.model = predictor.float32_model().eval()
        # Whether this copy scores images exactly as the predictor does (not when the predictor runs int8).
        self.same_scores = predictor.precision == "float32"
        for p in self.model.parameters():
            p.requires_grad_(False)  # no weight gradients: the input carries the graph (see _input)
        self.target_layers = list(self.model.cam_layers())
        # ViTs hand pytorch-grad-cam token sequences; their reshape_transform makes them 2-D maps.
        self.reshape_transform = getattr(self.model, "reshape_transform", None)
        self._lock = threading.Lock()

    def _input(self, images: np.ndarray) -> torch.Tensor:
        x = normalize(to_batch(images), self.predictor.mean, self.predictor.std)
        return x.to(self.predictor.device).requires_grad_(True)

    def heatmaps(self, image: np.ndarray, method: str = "GradCAM",
                 classes: tuple[str, ...] = ("fake", "real")) -> dict[str, np.ndarray]:
        """Maps in [0, 1] at the model's input size for each class, from one (H, W, 3) uint8 model input.

        Both classes come from one forward and one backward pass (see ``_maps_of_both_classes``);
        ScoreCAM, or one class, from one batched pass with a copy of the image per class. A map is all
        zeros only when no region pushes the logit toward that class.
        """
        return self.heatmaps_and_logit(image, method, classes)[0]

    def heatmaps_and_logit(self, image: np.ndarray, method: str = "GradCAM",
                           classes: tuple[str, ...] = ("fake", "real")) -> tuple[dict[str, np.ndarray], float]:
        """As :meth:`heatmaps`, plus the image's logit from the same forward pass (so a caller that wants
        both the verdict and the maps runs the model once: it matters for the wild track's ViT)."""
        for c in classes:
            if c not in CLASSES:
                raise ValueError(f"unknown class {c!r}; choose from {CLASSES}")
        labels = [CLASSES.index(c) for c in classes]
        if len(set(labels)) == 2 and method != "ScoreCAM":
            maps, logits = self._maps_of_both_classes(np.asarray(image)[None], method, labels[0])
        else:
            maps, logits = self._maps(np.repeat(np.asarray(image)[None], len(classes), axis=0), method, labels)
        return dict(zip(classes, maps)), float(logits[0])

    def _maps_of_both_classes(self, image: np.ndarray, method: str, first: int) -> tuple[np.ndarray, np.ndarray]:
        """Both classes' maps of one (1, H, W, 3) image from one forward and one backward pass.

        The models have one logit: the real class's target is -logit, so its gradients are exactly the
        fake class's negated. The second map is pytorch-grad-cam's own computation on the same
        activations with the negated gradients, equal to a second backward pass (tested) at half the
        cost. ScoreCAM scores masked copies per class instead, so it takes the batched path.
        """
        with self._lock, cam_class(method)(model=self.model, target_layers=self.target_layers,
                                          reshape_transform=self.reshape_transform) as cam:
            x = self._input(image)
            one = cam(input_tensor=x, targets=[BinaryClassifierOutputTarget(first)])
            logits = cam.outputs.detach().float().reshape(-1).cpu().numpy()
            grads = cam.activations_and_grads.gradients
            cam.activations_and_grads.gradients = [-g for g in grads]
            other = cam.aggregate_multi_layers(cam.compute_cam_per_layer(
                x, [BinaryClassifierOutputTarget(1 - first)], False))
        maps = np.concatenate([one, other]).astype(np.float32)
        return np.nan_to_num(maps), logits

    def maps(self, images: np.ndarray, method: str, labels) -> np.ndarray:
        """(N, H, W) maps in [0, 1] for a batch of (N, H, W, 3) uint8 inputs, each toward its own class
        label (0 real, 1 fake). The research scripts call this on many images at once."""
        return self._maps(images, method, labels)[0]

    def feature_channels(self) -> int:
        """Channels of the explained layer's activation (ScoreCAM's passes per map); one forward pass, cached."""
        if self._channels is None:
            seen = []
            hook = self.target_layers[0].register_forward_hook(lambda m, i, o: seen.append(o))
            try:
                with torch.no_grad():
                    s = self.predictor.input_size
                    self.model(torch.zeros(1, 3, s, s, device=self.predictor.device))
            finally:
                hook.remove()
            a = seen[0][0] if isinstance(seen[0], tuple) else seen[0]
            self._channels = int((self.reshape_transform(a) if self.reshape_transform else a).shape[1])
        return self._channels

    def _check_cost(self, method: str, n_maps: int) -> None:
        if method != "ScoreCAM" or self.max_scorecam_passes is None:
            return
        passes = self.feature_channels() * n_maps
        if passes > self.max_scorecam_passes:
            raise ExplainError(f"ScoreCAM on {self.predictor.name or 'this model'} would run {passes:,} forward passes "
                             f"({self.feature_channels():,} feature channels x {n_maps} maps) and hold the server for "
                             f"many seconds; it is offered up to {self.max_scorecam_passes:,}. Choose GradCAM, "
                             "GradCAM++, HiResCAM, LayerCAM, XGradCAM or EigenCAM.")

    def _maps(self, images: np.ndarray, method: str, labels) -> tuple[np.ndarray, np.ndarray]:
        self._check_cost(method, len(labels))
        targets = [BinaryClassifierOutputTarget(int(y)) for y in labels]
        with self._lock, cam_class(method)(model=self.model, target_layers=self.target_layers,
                                          reshape_transform=self.reshape_transform) as cam:
            if hasattr(cam, "batch_size"):
                cam.batch_size = 64  # ScoreCAM: masked copies per forward pass
            maps = cam(input_tensor=self._input(images), targets=targets)
            logits = cam.outputs.detach().float().reshape(-1).cpu().numpy()  # the forward pass the maps came from
        return np.nan_to_num(maps.astype(np.float32)), logits


def object_mask(image: np.ndarray, work_size: int = 96, iterations: int = 3, margin: float = 0.125) -> np.ndarray:
    """Segment the main object with OpenCV's GrabCut; True on the object, at the image's size.

    CIFAKE images are small and centred, so GrabCut starts from a rectangle inset by ``margin`` on each
    side, on a bicubic enlargement to ``work_size`` (GrabCut's colour models need more than 32x32 pixels).
    When GrabCut keeps almost nothing or almost everything (flat or busy images) the rectangle itself is
    used. Seeded, so the same image always gets the same mask.
    """
    h, w = image.shape[:2]
    big = cv2.resize(np.ascontiguousarray(image), (work_size, work_size), interpolation=cv2.INTER_CUBIC)
    m = max(1, int(round(work_size * margin)))
    rect = (m, m, work_size - 2 * m, work_size - 2 * m)
    mask = np.zeros((work_size, work_size), np.uint8)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(cv2.cvtColor(big, cv2.COLOR_RGB2BGR), mask, rect, np.zeros((1, 65)), np.zeros((1, 65)),
                    iterations, cv2.GC_INIT_WITH_RECT)
        fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.float32)
    except cv2.error:  # degenerate colour models (e.g. a flat image)
        fg = np.zeros((work_size, work_size), np.float32)
    fg_small = cv2.resize(fg, (w, h), interpolation=cv2.INTER_AREA) >= 0.5
    if not 0.05 <= fg_small.mean() <= 0.95:
        fg_small = np.zeros((h, w), bool)
        mh, mw = int(round(h * margin)), int(round(w * margin))
        fg_small[mh:h - mh, mw:w - mw] = True
    return fg_small


def background_share(cam: np.ndarray, foreground: np.ndarray) -> float:
    """Share of heatmap energy on the background (off the object); NaN for an all-zero map.

    Compare it with the background's share of the area: a map spread evenly scores exactly that.
    """
    total = float(cam.sum())
    return float(cam[~foreground].sum() / total) if total > 0 else float("nan")


def overlay(image: np.ndarray, cam: np.ndarray, size: int = 256, image_weight: float = 0.5) -> np.ndarray:
    """The heatmap over the image, both enlarged to ``size`` (image: nearest-neighbour; map: bilinear)."""
    rgb = cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST).astype(np.float32) / 255
    heat = cv2.resize(cam.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    return show_cam_on_image(rgb, np.clip(heat, 0, 1), use_rgb=True, image_weight=image_weight)


def outline(image: np.ndarray, foreground: np.ndarray, size: int = 256) -> np.ndarray:
    """The image enlarged with the object mask's outline drawn on it, to show what counts as object."""
    big = cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST).copy()
    fg = cv2.resize(foreground.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(big, contours, -1, (0, 255, 255), 2)
    return big


def tile_boxes(width: int, height: int, tile: int, max_tiles: int) -> list[tuple[int, int, int, int]]:
    """Native-resolution ``tile`` x ``tile`` boxes, at most ``max_tiles``.

    The grid has about as many columns per row as the image's aspect ratio asks for. Along a side the tiles
    can cover, they are spread over all of it (touching or overlapping); along a side they cannot, they sit
    side by side around the centre, where the subject usually is, rather than in the corners. An image
    smaller than one tile gets no boxes.
    """
    if min(width, height) < tile or max_tiles < 1:
        return []
    want_x, want_y = -(-width // tile), -(-height // tile)  # tiles needed to cover it all
    nx, ny = want_x, want_y
    while nx * ny > max_tiles:  # shrink the longer side's count first, keeping the grid's shape
        if nx / want_x >= ny / want_y and nx > 1:
            nx -= 1
        else:
            ny -= 1

    def starts(size: int, n: int, want: int) -> list[int]:
        if n == want and n > 1:  # enough tiles for the whole side
            return np.linspace(0, size - tile, n).round().astype(int).tolist()
        first = (size - n * tile) // 2  # a contiguous run, centred
        return [first + i * tile for i in range(n)]

    return [(x, y, x + tile, y + tile) for y in starts(height, ny, want_y) for x in starts(width, nx, want_x)]


def tile_map(predictor, rgb, max_tiles: int = 6) -> list[dict]:
    """P(fake) of native-resolution tiles of a full image: ``[{"box": (x0, y0, x1, y1), "p_fake": p}]``.

    ``rgb`` is the whole decoded RGB image (a PIL image, or an (H, W, 3) uint8 array). Each tile is what
    the model sees of that part of the image without any downscaling, so fine generator texture counts;
    ``tile_overlay`` draws them.
    """
    w, h = rgb.size if hasattr(rgb, "crop") else (rgb.shape[1], rgb.shape[0])
    boxes = tile_boxes(w, h, predictor.input_size, max_tiles)
    if not boxes:
        return []
    # A PIL image may be in any mode (the app keeps a large upload in its own): each tile becomes RGB alone.
    crop = (lambda b: np.asarray(to_rgb(rgb.crop(b)))) if hasattr(rgb, "crop") else (lambda b: rgb[b[1]:b[3], b[0]:b[2]])
    p = predictor.predict_arrays(np.stack([crop(b) for b in boxes]))
    return [{"box": b, "p_fake": float(pi)} for b, pi in zip(boxes, p)]


REAL_RGB, FAKE_RGB = np.array([40, 90, 230], np.float32), np.array([220, 40, 40], np.float32)


def p_colour(p: float) -> tuple[int, int, int]:
    """Blue (P(fake) 0, real) to red (1, fake), straight through purple: what the legend says, no other hues."""
    return tuple(int(v) for v in REAL_RGB + (FAKE_RGB - REAL_RGB) * float(np.clip(p, 0, 1)))


def tile_overlay(display: np.ndarray, tiles: list[dict], full_size: tuple[int, int], alpha: float = 0.45) -> np.ndarray:
    """The tiles' P(fake) drawn over a display copy of the image: only the judged tiles are tinted (blue real,
    red fake), each outlined, with its value written in its middle when the tile is large enough to hold it."""
    h, w = display.shape[:2]
    fw, fh = full_size
    sx, sy = w / fw, h / fh
    boxes = [tuple(int(round(v)) for v in (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy)) for b in (t["box"] for t in tiles)]
    out = display.astype(np.float32)
    for t, (x0, y0, x1, y1) in zip(tiles, boxes):
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, max(x1, x0 + 1)), min(h, max(y1, y0 + 1))
        out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - alpha) + np.array(p_colour(t["p_fake"]), np.float32) * alpha
    out = out.astype(np.uint8)
    for t, (x0, y0, x1, y1) in zip(tiles, boxes):
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 255, 255), 1)
        side = min(x1 - x0, y1 - y0)
        if side >= 28:  # room for the number
            scale = min(1.2, side / 90)
            text = f"{t['p_fake']:.2f}"
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            org = ((x0 + x1 - tw) // 2, (y0 + y1 + th) // 2)
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
