"""VGG-16 and VGG-19 (configurations D and E, no batch norm) with torchvision's module tree.

Both also answer to the layer names of the papers that use them (Gatys et al.: ``conv1_1``,
``relu1_1``, ``pool1``, ..., ``fc6``; see :mod:`pyinvert.models.gatys`), and can replace their
max poolings by average poolings of the same size (``pooling="avg"``), as Gatys et al. do for
texture synthesis and style transfer.

References:
    K. Simonyan, A. Zisserman. Very deep convolutional networks for large-scale image
    recognition. ICLR 2015 (Table 1, configurations D and E).
    L. A. Gatys, A. S. Ecker, M. Bethge. Texture synthesis using convolutional neural networks.
    NIPS 2015 (Sec. 2: VGG-19, max pooling replaced by average pooling).
"""

from types import MappingProxyType
from typing import Dict, Mapping, Sequence

import torch
from torch import Tensor, nn

from pyinvert.models._init import init_weights

#: Output channels of each 3x3 convolution; "M" is a 2x2 pooling (configuration D).
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", *(256,) * 3, "M", *(512,) * 3, "M", *(512,) * 3, "M")
#: Configuration E: sixteen convolutions.
VGG19_CONFIG = (64, 64, "M", 128, 128, "M", *(256,) * 4, "M", *(512,) * 4, "M", *(512,) * 4, "M")

POOLINGS = ("max", "avg")


def _features(config, pooling: str = "max") -> nn.Sequential:
    layers, channels = [], 3
    for item in config:
        if item == "M":
            layers.append(
                nn.MaxPool2d(kernel_size=2, stride=2)
                if pooling == "max"
                else nn.AvgPool2d(kernel_size=2, stride=2)
            )
        else:
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU()]
            channels = item
    return nn.Sequential(*layers)


def vgg_aliases(config: Sequence) -> Dict[str, str]:
    """The papers' layer names of a VGG configuration -> torchvision's module names.

    ``convB_I`` / ``reluB_I``: the I-th convolution of block B and its ReLU; ``poolB``: the
    pooling that ends block B; ``fc6``, ``relu6``, ``fc7``, ``relu7``, ``fc8``: the classifier.

    Example:
        >>> aliases = vgg_aliases(VGG19_CONFIG)
        >>> aliases["conv1_1"], aliases["relu5_4"], aliases["pool5"], aliases["fc8"]
        ('features.0', 'features.35', 'features.36', 'classifier.6')
    """
    aliases, block, conv, index = {}, 1, 0, 0
    for item in config:
        if item == "M":
            aliases[f"pool{block}"] = f"features.{index}"
            block, conv, index = block + 1, 0, index + 1
        else:
            conv += 1
            aliases[f"conv{block}_{conv}"] = f"features.{index}"
            aliases[f"relu{block}_{conv}"] = f"features.{index + 1}"
            index += 2
    aliases.update(
        {
            "fc6": "classifier.0",
            "relu6": "classifier.1",
            "fc7": "classifier.3",
            "relu7": "classifier.4",
            "fc8": "classifier.6",
        }
    )
    return aliases


class _VGG(nn.Module):
    config: Sequence = ()
    layer_aliases: Mapping[str, str] = MappingProxyType({})

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, pooling: str = "max"):
        super().__init__()
        name = type(self).__name__
        if pooling not in POOLINGS:
            raise ValueError(f"{name}: unknown pooling {pooling!r}; expected 'max' or 'avg'")
        self.pooling = pooling
        self.features = _features(self.config, pooling)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),  # 0  fc6
            nn.ReLU(),  # 1  relu6
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),  # 3  fc7
            nn.ReLU(),  # 4  relu7
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),  # 6  fc8
        )
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class VGG16(_VGG):
    """VGG-16: thirteen 3x3 convolutions (``features.0`` ... ``features.28``, poolings at
    ``features.4/9/16/23/30``) and three linear layers (``classifier.0/3/6``), parameter names
    and shapes as torchvision's ``vgg16``.

    ReLUs are not in-place, so a forward hook on a convolution sees its pre-ReLU output.
    ``layer_aliases`` maps the papers' names (``conv1_1``, ``relu3_3``, ``pool5``, ``fc7``)
    to the module names.

    Args:
        num_classes: size of the last layer. Default: 1000.
        dropout: dropout probability of the classifier (inactive in eval mode). Default: 0.5.
        pooling: "max" (the network as trained), or "avg" for 2x2 average poolings in the
            same places (Gatys et al.; the same parameters). Default: 'max'.

    Shape:
        - Input: (B, 3, H, W), H and W >= 32, ImageNet-normalized (see ``normalize``).
        - Output: (B, num_classes) logits.
    """

    config = VGG16_CONFIG
    layer_aliases = MappingProxyType(vgg_aliases(VGG16_CONFIG))


class VGG19(_VGG):
    """VGG-19 (configuration E): sixteen 3x3 convolutions (``features.0`` ...
    ``features.34``, poolings at ``features.4/9/18/27/36``) and three linear layers
    (``classifier.0/3/6``), parameter names and shapes as torchvision's ``vgg19`` (weights
    file ``vgg19-dcbb9e9d.pth``).

    ReLUs are not in-place. ``layer_aliases`` maps the papers' names (``conv1_1`` ...
    ``conv5_4``, ``relu1_1`` ..., ``pool1`` ... ``pool5``, ``fc6`` ... ``fc8``) to the module
    names.

    Args:
        num_classes: size of the last layer. Default: 1000.
        dropout: dropout probability of the classifier (inactive in eval mode). Default: 0.5.
        pooling: "max" (the network as trained), or "avg" for 2x2 average poolings in the
            same places (Gatys et al.; the same parameters). Default: 'max'.

    Shape:
        - Input: (B, 3, H, W), H and W >= 32, ImageNet-normalized (see ``normalize``).
        - Output: (B, num_classes) logits.

    Example:
        >>> with torch.device("meta"):  # shapes only
        ...     net = VGG19(pooling="avg")
        >>> net.layer_aliases["pool1"], type(net.features[4]).__name__
        ('features.4', 'AvgPool2d')
    """

    config = VGG19_CONFIG
    layer_aliases = MappingProxyType(vgg_aliases(VGG19_CONFIG))
