"""AlexNet ("one weird trick" variant) with torchvision's module tree.

References:
    A. Krizhevsky. One weird trick for parallelizing convolutional neural networks.
    arXiv:1404.5997, 2014.
"""

import torch
from torch import Tensor, nn

from pyinvert.models._init import init_weights


class AlexNet(nn.Module):
    """AlexNet: five convolutions (``features.0/3/6/8/10``) and three linear layers
    (``classifier.1/4/6``), parameter names and shapes as torchvision's ``alexnet``.

    ReLUs are not in-place, so a forward hook on a convolution sees its pre-ReLU output.

    Args:
        num_classes: size of the last layer. Default: 1000.
        dropout: dropout probability of the classifier (inactive in eval mode). Default: 0.5.

    Shape:
        - Input: (B, 3, H, W), H and W >= 63, ImageNet-normalized (see ``normalize``).
        - Output: (B, num_classes) logits.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),  # 0
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),  # 3
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),  # 6
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),  # 8
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),  # 10
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * 6 * 6, 4096),  # 1
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),  # 4
            nn.ReLU(),
            nn.Linear(4096, num_classes),  # 6
        )
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
