"""VGG-16 (configuration D, no batch norm) with torchvision's module tree.

References:
    K. Simonyan, A. Zisserman. Very deep convolutional networks for large-scale image
    recognition. ICLR 2015.
"""
import torch
from torch import Tensor, nn

from pyinvert.models._init import init_weights

#: Output channels of each 3x3 convolution; "M" is a 2x2 max pooling (configuration D).
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                512, 512, 512, "M", 512, 512, 512, "M")


def _features(config) -> nn.Sequential:
    layers, channels = [], 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU()]
            channels = item
    return nn.Sequential(*layers)


class VGG16(nn.Module):
    """VGG-16: thirteen 3x3 convolutions (``features.0`` ... ``features.28``, max poolings at
    ``features.4/9/16/23/30``) and three linear layers (``classifier.0/3/6``), parameter names
    and shapes as torchvision's ``vgg16``.

    ReLUs are not in-place, so a forward hook on a convolution sees its pre-ReLU output.

    Args:
        num_classes: size of the last layer. Default: 1000.
        dropout: dropout probability of the classifier (inactive in eval mode). Default: 0.5.

    Shape:
        - Input: (B, 3, H, W), H and W >= 32, ImageNet-normalized (see ``normalize``).
        - Output: (B, num_classes) logits.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = _features(VGG16_CONFIG)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),                               # 0
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),                                      # 3
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),                               # 6
        )
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))
