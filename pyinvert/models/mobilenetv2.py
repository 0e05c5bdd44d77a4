"""MobileNetV2 (width 1.0) with torchvision's module tree.

References:
    M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen. MobileNetV2: inverted residuals
    and linear bottlenecks. CVPR 2018.
"""

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pyinvert.models._init import init_weights

#: (expansion t, output channels c, repeats n, first stride s) of each bottleneck group.
MOBILENET_V2_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias, "same" padding) -> BatchNorm -> ReLU6, children named 0, 1, 2."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(
                cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False
            ),
            nn.BatchNorm2d(cout),
            nn.ReLU6(),
        )


class InvertedResidual(nn.Module):
    """1x1 expansion (skipped when t = 1), 3x3 depthwise, linear 1x1 projection (``conv``),
    plus the input when the stride is 1 and the channels match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        self.use_res_connect = stride == 1 and cin == cout
        layers = [] if expansion == 1 else [ConvBNReLU6(cin, hidden, kernel_size=1)]
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, kernel_size=1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNetV2: ``features.0`` (stem conv), ``features.1`` ... ``features.17`` (inverted
    residual blocks), ``features.18`` (1x1 conv to 1280), global average pooling and
    ``classifier.1`` (linear); parameter and buffer names and shapes as torchvision's
    ``mobilenet_v2``.

    Args:
        num_classes: size of the last layer. Default: 1000.
        dropout: dropout probability before the classifier (inactive in eval mode).
            Default: 0.2.

    Shape:
        - Input: (B, 3, H, W), H and W >= 1, ImageNet-normalized (see ``normalize``).
        - Output: (B, num_classes) logits.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        channels, last = 32, 1280
        features = [ConvBNReLU6(3, channels, stride=2)]
        for t, c, n, s in MOBILENET_V2_SETTING:
            for i in range(n):
                features.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
                channels = c
        features.append(ConvBNReLU6(channels, last, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))
