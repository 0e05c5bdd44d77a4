"""ResNet-18 with torchvision's module tree.

References:
    K. He, X. Zhang, S. Ren, J. Sun. Deep residual learning for image recognition. CVPR 2016.
"""

from typing import Optional

import torch
from torch import Tensor, nn

from pyinvert.models._init import init_weights


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus the identity (or a strided 1x1 conv-BN ``downsample``).

    As in torchvision, one ``relu`` module is applied twice (after ``bn1`` and after the sum),
    so a hook on ``layerN.M.relu`` fires twice per forward: use ``layerN.M`` for the block's
    output. Nothing is computed in place.
    """

    def __init__(
        self, cin: int, cout: int, stride: int = 1, downsample: Optional[nn.Module] = None
    ):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or cin != cout:
        downsample = nn.Sequential(
            nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(cout),
        )
    layers = [BasicBlock(cin, cout, stride, downsample)]
    layers += [BasicBlock(cout, cout) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet18(nn.Module):
    """ResNet-18: stem ``conv1/bn1/relu/maxpool``, four stages ``layer1`` ... ``layer4`` of two
    ``BasicBlock`` each (``layer2.0.downsample.0`` ...), ``avgpool`` and ``fc``; parameter and
    buffer names and shapes as torchvision's ``resnet18``.

    Args:
        num_classes: size of the last layer. Default: 1000.

    Shape:
        - Input: (B, 3, H, W), H and W >= 1, ImageNet-normalized (see ``normalize``).
        - Output: (B, num_classes) logits.
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _stage(64, 64, 2, stride=1)
        self.layer2 = _stage(64, 128, 2, stride=2)
        self.layer3 = _stage(128, 256, 2, stride=2)
        self.layer4 = _stage(256, 512, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
