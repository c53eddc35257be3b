"""Model zoo: every model maps a normalised (N, 3, S, S) batch (S = its record's input_size) to (N,) logits,
sigmoid(logit) = P(fake).

Models are built by name with :func:`create_model`. Each one names the layers Grad-CAM should hook
(``cam_layers``) so explanation code never hard-codes module paths, and every such layer still has a
spatial map (at least 2x2) at the 32x32 input size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models import resnet50 as tv_resnet50
from torchvision.models.resnet import BasicBlock

from .residual import ResidualNet

# OpenAI CLIP's image normalisation (the wild track's backbone was trained with it).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CifakeCNN(nn.Module):
    """The published CIFAKE baseline (Bird & Lotfi 2023), layer for layer: 355,649 parameters.

    conv3x3(32) -> maxpool -> conv3x3(64) -> maxpool -> conv3x3(128) -> flatten -> dense(128) -> 1.
    Valid (unpadded) convolutions, as in the Keras original: 32 -> 30 -> 15 -> 13 -> 6 -> 4.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * 4 * 4, 128), nn.ReLU(inplace=True), nn.Linear(128, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).squeeze(1)

    def cam_layers(self) -> list[nn.Module]:
        # The last conv block (4x4 map); its ReLU output is what Grad-CAM weighs.
        return [self.features[7]]


class ResNet50(nn.Module):
    """torchvision's ResNet50 with a one-logit head, adapted to 32x32 input.

    The ImageNet stem (7x7 stride 2 + max-pool) would shrink a 32x32 image to 8x8 before the first
    stage and to 1x1 in the last one, which throws away the fine texture that separates the classes
    and leaves Grad-CAM nothing spatial. Here the stem is a 3x3 stride-1 convolution and the max-pool
    is kept, so the four stages run at 16, 8, 4 and 2 pixels: spatial maps everywhere at about a
    twelfth of the cost of a stride-free CIFAR stem.
    """

    def __init__(self) -> None:
        super().__init__()
        net = tv_resnet50(weights=None, num_classes=1)
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        # Zero-init the last BN of each block: each residual branch starts as identity, which
        # trains deep nets from scratch faster (Goyal et al. 2017; torchvision's zero_init_residual).
        for m in net.modules():
            if hasattr(m, "bn3"):
                nn.init.zeros_(m.bn3.weight)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)

    def cam_layers(self) -> list[nn.Module]:
        return [self.net.layer4[-1]]  # 2x2 at 32x32 input


class FakeSpotNet(nn.Module):
    """A compact residual network of our own design for 32x32 forensics.

    Why this shape: the evidence that separates Stable Diffusion output from CIFAR photos is in
    fine texture and high frequencies, so the network keeps full resolution for its first stage
    (no early stride or pooling) and only then widens and downsamples. Residual BasicBlocks from
    torchvision, BatchNorm, global average pooling, one logit. Grad-CAM hooks the last stage (4x4 with four stages).
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), blocks: tuple[int, ...] = (1, 1, 1)) -> None:
        super().__init__()
        if len(widths) != len(blocks):
            raise ValueError(f"widths {widths} and blocks {blocks} must have the same length")
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                down = None
                if j == 0 and (stride != 1 or cin != w):
                    down = nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w))
                layers.append(BasicBlock(cin, w, stride if j == 0 else 1, down))
                cin = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(cin, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x))).squeeze(1)

    def cam_layers(self) -> list[nn.Module]:
        return [self.stages[-1]]


class Ensemble(nn.Module):
    """Mean of the member models' logits; members are given as ``[{"arch": name, "kwargs": {...}}, ...]``.

    Averaging logits of differently built models cancels part of their independent errors. Grad-CAM
    hooks every member's layers; pytorch-grad-cam resizes each map to the input and averages them.
    """

    def __init__(self, members: list[dict]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(create_model(m["arch"], **m.get("kwargs", {})) for m in members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)

    def cam_layers(self) -> list[nn.Module]:
        return [layer for m in self.members for layer in m.cam_layers()]


class ClipViTB16(nn.Module):
    """The image tower of OpenAI CLIP ViT-B/16: (N, 3, 224, 224) CLIP-normalised -> (N, 512) embeddings.

    Built by timm (``vit_base_patch16_clip_quickgelu_224``), which defines OpenAI's tower exactly:
    pre-norm blocks with QuickGELU (the activation OpenAI trained with; timm's plain ``clip`` variant
    uses GELU), a LayerNorm before the blocks, the class token taken after the final LayerNorm and a
    bias-free 768 -> 512 projection (timm's ``head``; its bias is held at zero). open_clip defines the
    same network but brings a text tower and tokenizer we never use; transformers is a far larger
    dependency. Weights come only from our own checkpoint (``train.import_clip``), never a hub.
    """

    embed_dim = 512
    width = 768
    precision = "float32"  # detector.int8.Int8Backbone runs the same tower in int8

    def __init__(self, **timm_kwargs) -> None:
        """``timm_kwargs`` change timm's definition (tests build a two-block tower with ``depth=2`` and a
        narrow ``embed_dim``); the shipped backbone uses none."""
        super().__init__()
        import timm

        self.vit = timm.create_model("vit_base_patch16_clip_quickgelu_224", pretrained=False, num_classes=512,
                                     **timm_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)

    def forward_tokens(self, x: torch.Tensor, layers: tuple[int, ...] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Embeddings plus the class token after each block in ``layers`` (1-based), for cached features."""
        v = self.vit
        h = v.norm_pre(v._pos_embed(v.patch_embed(x)))
        cls = []
        for i, blk in enumerate(v.blocks, start=1):
            h = blk(h)
            if i in layers:
                cls.append(h[:, 0])
        return v.head(v.norm(h)[:, 0]), cls

    def cam_layers(self) -> list[nn.Module]:
        # The last block's first LayerNorm: its output still has one token per 16x16 patch (14x14 grid).
        return [self.vit.blocks[-1].norm1]

    @staticmethod
    def reshape_transform(tokens: torch.Tensor) -> torch.Tensor:
        """(N, 1 + 196, C) tokens -> (N, C, 14, 14) maps for pytorch-grad-cam (class token dropped)."""
        n, t, c = tokens.shape
        side = int(round((t - 1) ** 0.5))
        return tokens[:, 1:].reshape(n, side, side, c).permute(0, 3, 1, 2)


class WildHead(nn.Module):
    """The wild track's classifier on CLIP features: one logit, sigmoid = P(fake).

    ``kind="linear"``: a linear probe on the L2-normalised 512-d embedding (UnivFD, Ojha et al. 2023).
    ``kind="mlp"``: LayerNorm -> Linear -> GELU -> Dropout -> Linear on the concatenation of the
    normalised embedding and the class tokens of the blocks in ``layers`` (earlier blocks keep more of
    the low-level texture that generators get wrong; Koutlis & Papadopoulos 2024).
    """

    def __init__(self, kind: str = "linear", layers: tuple[int, ...] = (), hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise ValueError(f"unknown head kind {kind!r}; valid: linear, mlp")
        self.kind, self.layers = kind, tuple(int(i) for i in layers)
        dim = ClipViTB16.embed_dim + ClipViTB16.width * len(self.layers)
        if kind == "linear":
            self.net = nn.Linear(dim, 1)
        else:
            self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(hidden, 1))

    def features(self, embed: torch.Tensor, cls: list[torch.Tensor]) -> torch.Tensor:
        parts = [nn.functional.normalize(embed, dim=-1)]
        parts += [nn.functional.layer_norm(c, c.shape[-1:]) for c in cls]
        return torch.cat(parts, dim=-1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats).squeeze(-1)


class WildDetector(nn.Module):
    """CLIP ViT-B/16 (frozen) + :class:`WildHead`: (N, 3, 224, 224) CLIP-normalised -> (N,) logits."""

    def __init__(self, head: dict | None = None, backbone: dict | None = None) -> None:
        """``head``: WildHead's arguments; ``backbone``: ClipViTB16's (none for the shipped model)."""
        super().__init__()
        self.backbone = ClipViTB16(**(backbone or {}))
        self.head = WildHead(**(head or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embed, cls = self.backbone.forward_tokens(x, self.head.layers)
        return self.head(self.head.features(embed, cls))

    def cam_layers(self) -> list[nn.Module]:
        return self.backbone.cam_layers()

    reshape_transform = staticmethod(ClipViTB16.reshape_transform)


_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "clip_vit_b16": ClipViTB16,
    "wild": WildDetector,
    "cnn": CifakeCNN,
    "resnet50": ResNet50,
    "fakespot": FakeSpotNet,
    "ensemble": Ensemble,
    "residual": ResidualNet,
}


def list_models() -> list[str]:
    return sorted(_FACTORIES)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a model by name with random weights; ``kwargs`` go to its constructor."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}") from None
    return factory(**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
