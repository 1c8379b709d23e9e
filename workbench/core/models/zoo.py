"""The built-in model zoo: five small, readable models, each showing one design idea.

Every model takes ``input_shape`` without the batch dimension: ``(C, H, W)`` for images or
``(F,)`` for feature vectors, and returns logits of shape ``(N, num_classes)``.

Rules the models follow so that the rest of the engine can work on them:

* no data-dependent Python control flow in ``forward`` (only branches on constant attributes set
  in ``__init__``), so torch.fx, torch.export, ``torch.onnx.export(dynamo=True)`` and
  torch-pruning can trace them;
* no in-place ops on tensors that a residual path still needs (``out = out + identity``, never
  ``out += identity``; activations are not ``inplace=True``);
* channel counts are multiples of 8 (``width`` scales them), which suits vector units and keeps
  structured pruning easy to reason about.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from workbench.errors import ModelLoadError

ZOO: dict[str, str] = {
    "mlp": "Multi-layer perceptron: flattens any input; the baseline every other model must beat.",
    "small_cnn": "Small conv-BN-ReLU network (~150k params): fast to train on 32x32 images, the quickstart model.",
    "mobilenet": "MobileNetV2-style inverted residuals with depthwise-separable convs (~8-9x fewer MACs per conv).",
    "resnet": "ResNet-20-style basic blocks with residual adds (CIFAR layout); residuals let deep nets train.",
    "transformer": "Small Vision Transformer: patch tokens + self-attention encoder (also takes feature vectors).",
}

MIN_IMAGE_SIDE = 8


def make_divisible(value: float, divisor: int = 8, minimum: int = 8) -> int:
    """Round a (width-scaled) channel count to a multiple of ``divisor``, never below ``minimum``.

    Like MobileNet's ``_make_divisible``: never round down by more than 10%.
    """
    new = max(minimum, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Check that a convolutional model can take ``input_shape``; return (C, H, W)."""
    if len(input_shape) != 3:
        raise ModelLoadError(
            f"zoo model {name!r} needs image input (C, H, W) but data gives {list(input_shape)}; "
            "use 'mlp' or 'transformer' for feature vectors"
        )
    c, h, w = input_shape
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ModelLoadError(
            f"zoo model {name!r} needs images at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} but data gives "
            f"{list(input_shape)}; raise data.image_size or use 'mlp'"
        )
    return c, h, w


def conv_bn_relu(
    cin: int, cout: int, stride: int = 1, groups: int = 1, act: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """3x3 conv (no bias: BN has one) + BatchNorm + activation, the basic CNN building block."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        act(),
    )


# --------------------------------------------------------------------------------------------
# mlp
# --------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Flatten + Linear-BN-ReLU stack. Idea: the dense baseline; no spatial weight sharing, so its
    parameter count grows with input size while a CNN's does not."""

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        width: float = 1.0,
        hidden: tuple[int, ...] = (256, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_features = math.prod(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for h in hidden:
            h = make_divisible(h * width)
            layers += [nn.Linear(prev, h, bias=False), nn.BatchNorm1d(h), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            prev = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# --------------------------------------------------------------------------------------------
# small_cnn
# --------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """Three stages of conv-BN-ReLU with 2x2 max-pooling, then global average pooling + linear.

    Idea: weight sharing and pooling. Compute is spent where the feature map is small, and global
    average pooling makes the head independent of the image size.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        width: float = 1.0,
        channels: tuple[int, int, int] = (32, 64, 128),
    ) -> None:
        super().__init__()
        c, _, _ = _image_shape("small_cnn", input_shape)
        c1, c2, c3 = (make_divisible(ch * width) for ch in channels)
        self.features = nn.Sequential(
            conv_bn_relu(c, c1),
            nn.MaxPool2d(2),  # 32 -> 16
            conv_bn_relu(c1, c2),
            nn.MaxPool2d(2),  # 16 -> 8
            conv_bn_relu(c2, c3),
            conv_bn_relu(c3, c3),
            nn.MaxPool2d(2),  # 8 -> 4
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


# --------------------------------------------------------------------------------------------
# mobilenet
# --------------------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection.

    Ideas: (1) a depthwise-separable conv (per-channel 3x3 + 1x1 pointwise) costs
    ``1/cout + 1/9`` of a full 3x3 conv, i.e. ~8-9x fewer MACs; (2) expand to a wide space for the
    non-linearity (ReLU6), then project back with *no* activation (the "linear bottleneck", so
    ReLU does not destroy information in the narrow space); (3) a residual add when the block
    keeps stride 1 and the channel count.
    """

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = cin * expand_ratio
        self.use_residual = stride == 1 and cin == cout  # constant: fine for tracers
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),  # depthwise
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),  # pointwise projection, linear (no activation)
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_residual:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 adapted to small images: stride-1 stem and only three stride-2 stages
    (32 -> 16 -> 8 -> 4) instead of five, a shorter stack and a 640-wide last conv.

    ``width`` is the classic width multiplier (scales every layer's channels).
    """

    # (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2
    CONFIG: tuple[tuple[int, int, int, int], ...] = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 3, 2),
        (6, 96, 2, 1),
        (6, 160, 2, 1),
    )

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        width: float = 1.0,
        last_channels: int = 640,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        c, _, _ = _image_shape("mobilenet", input_shape)
        stem = make_divisible(32 * width)
        layers: list[nn.Module] = [conv_bn_relu(c, stem, act=nn.ReLU6)]
        cin = stem
        for t, ch, n, s in self.CONFIG:
            cout = make_divisible(ch * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = make_divisible(last_channels * max(1.0, width))
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.flatten(self.pool(self.features(x)))))


# --------------------------------------------------------------------------------------------
# resnet
# --------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN, plus the input ("identity shortcut"), then ReLU.

    Idea: the block learns a residual ``F(x)`` added to ``x``, so gradients flow through the
    identity path and deep stacks train. When stride or width changes, a 1x1 conv + BN projects the
    shortcut ("option B"), which tracers and pruners handle better than zero-padding.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)  # not in-place: keeps autograd and tracers happy
        return self.relu2(out)


class ResNet(nn.Module):
    """ResNet for small images (He et al. 2016, CIFAR variant): 3x3 stem, three stages of
    ``blocks_per_stage`` basic blocks with 16/32/64 channels (x ``width``); ``blocks_per_stage=3``
    is ResNet-20 (6n+2 layers)."""

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        width: float = 1.0,
        blocks_per_stage: int = 3,
        channels: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        c, _, _ = _image_shape("resnet", input_shape)
        widths = [make_divisible(ch * width) for ch in channels]
        self.stem = conv_bn_relu(c, widths[0])
        stages: list[nn.Module] = []
        cin = widths[0]
        for i, cout in enumerate(widths):
            blocks = [BasicBlock(cin, cout, stride=1 if i == 0 else 2)]
            blocks += [BasicBlock(cout, cout) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.stages(self.stem(x)))))


# --------------------------------------------------------------------------------------------
# transformer
# --------------------------------------------------------------------------------------------


def _patch_size(h: int, w: int, max_tokens: int) -> int:
    """Smallest patch size whose token grid has at most ``max_tokens`` tokens (4 for 32x32 -> 64)."""
    p = 1
    while (h // p) * (w // p) > max_tokens:
        p += 1
    return p


class PatchEmbed(nn.Module):
    """Cut an image into non-overlapping ``p x p`` patches and project each to ``dim`` (a strided
    conv does both at once). Pixels beyond the last whole patch are dropped."""

    def __init__(self, channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, dim, h, w) -> (N, tokens, dim)


class FeatureEmbed(nn.Module):
    """Chunk a feature vector into tokens of ``chunk`` features (zero-padded to whole chunks) and
    project each chunk to ``dim``. Lets the same encoder work on tabular data."""

    def __init__(self, features: int, dim: int, chunk: int) -> None:
        super().__init__()
        self.tokens = math.ceil(features / chunk)
        self.chunk = chunk
        self.pad = self.tokens * chunk - features  # constant, decided at build time
        self.proj = nn.Linear(chunk, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = nn.functional.pad(x, (0, self.pad))
        return self.proj(x.unflatten(1, (self.tokens, self.chunk)))


class VisionTransformer(nn.Module):
    """A small ViT: tokens + learned position embedding -> pre-norm transformer encoder -> mean pool
    over tokens -> LayerNorm -> linear head.

    Idea: self-attention lets every patch see every other patch from layer one, at a cost that grows
    with the square of the token count, hence patches sized to keep ~64 tokens. Mean pooling (instead
    of a class token) keeps the graph simple for export and pruning.
    """

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        width: float = 1.0,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
        max_tokens: int = 64,
        patch_size: int = 0,
    ) -> None:
        super().__init__()
        if heads < 1:
            raise ModelLoadError(f"transformer heads must be >= 1, got {heads}")
        dim = make_divisible(dim * width)
        dim = math.ceil(dim / heads) * heads  # attention splits dim evenly across heads
        self.embed: nn.Module
        if len(input_shape) == 3:
            c, h, w = input_shape
            p = patch_size or _patch_size(h, w, max_tokens)
            if p > min(h, w):
                raise ModelLoadError(
                    f"transformer patch_size {p} is larger than the image {list(input_shape)}"
                )
            self.embed = PatchEmbed(c, dim, p)
            tokens = (h // p) * (w // p)
        elif len(input_shape) == 1:
            (f,) = input_shape
            chunk = patch_size or max(1, math.ceil(f / min(max_tokens, 16)))
            self.embed = FeatureEmbed(f, dim, chunk)
            tokens = self.embed.tokens
        else:
            raise ModelLoadError(
                f"zoo model 'transformer' takes images (C, H, W) or feature vectors (F,) but data gives "
                f"{list(input_shape)}; use 'mlp' for other shapes"
            )
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                dim_feedforward=int(dim * mlp_ratio),
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.classifier(self.norm(x.mean(dim=1)))


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "mlp": MLP,
    "small_cnn": SmallCNN,
    "mobilenet": MobileNetV2,
    "resnet": ResNet,
    "transformer": VisionTransformer,
}


def build_zoo_model(
    name: str, num_classes: int, input_shape: tuple[int, ...], width: float = 1.0, **kwargs: object
) -> nn.Module:
    """Build zoo model ``name`` for ``input_shape`` (no batch dim) with ``num_classes`` outputs.

    ``kwargs`` go to the model's constructor (e.g. ``depth=6`` for the transformer); anything a
    model cannot take raises ``ModelLoadError`` with one line saying what would work.
    """
    if name not in _BUILDERS:
        raise ModelLoadError(f"unknown zoo model {name!r}; choose one of: {', '.join(ZOO)}")
    if num_classes < 1:
        raise ModelLoadError(f"zoo model {name!r}: num_classes must be >= 1, got {num_classes}")
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d <= 0 for d in shape):
        raise ModelLoadError(
            f"zoo model {name!r}: input shape {list(shape)} must be non-empty positive sizes"
        )
    if width <= 0:
        raise ModelLoadError(f"zoo model {name!r}: width must be > 0, got {width}")
    try:
        return _BUILDERS[name](num_classes, shape, width, **kwargs)
    except ModelLoadError:
        raise
    except TypeError as exc:
        raise ModelLoadError(f"zoo model {name!r} does not accept kwargs {sorted(kwargs)}: {exc}") from None
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise ModelLoadError(f"zoo model {name!r} cannot be built with kwargs {kwargs}: {exc}") from None
