"""Offline CNN model zoo: AlexNet, VGG-16, VGG-19, ResNet-18 and MobileNetV2 in plain PyTorch.

The networks have exactly torchvision's module tree and parameter / buffer names and shapes,
so torchvision's ImageNet checkpoints load with ``strict=True``, and layers are named as in
torchvision (``features.6``, ``layer2.1``, ``classifier.1``, ``fc``). No activation is
computed in place, so a forward hook on any layer sees that layer's own output. VGG-16/19 also
answer to the papers' layer names (``conv1_1``, ``relu1_1``, ``pool1``, ..., ``fc6``; see
``layer_aliases``) and load with average poolings (``load_model("vgg19", pooling="avg")``).

Example:
    >>> from pyinvert import models
    >>> from pyinvert.data import sample_path
    >>> net = models.load_model("mobilenet_v2")           # random weights; "imagenet" for real
    >>> x = models.normalize(models.prepare_image(sample_path("chelsea")))
    >>> net(x[None]).shape
    torch.Size([1, 1000])

References:
    A. Mahendran, A. Vedaldi. Understanding deep image representations by inverting them.
    CVPR 2015 (section 4: the CNN whose layers are inverted).
"""

from pyinvert.models.alexnet import AlexNet
from pyinvert.models.gatys import (
    CONTENT_LAYERS,
    STYLE_LAYERS,
    TEXTURE_LAYERS,
    gram_parameter_count,
    layer_aliases,
    resolve_layer,
)
from pyinvert.models.imagenet import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    classify,
    decode,
    denormalize,
    imagenet_classes,
    normalize,
    prepare_image,
)
from pyinvert.models.layers import describe, format_table, layer_names, models_command
from pyinvert.models.mobilenetv2 import MobileNetV2
from pyinvert.models.resnet import ResNet18
from pyinvert.models.vgg import VGG16, VGG19
from pyinvert.models.zoo import (
    MODELS,
    POOLING_MODELS,
    WEIGHT_FILES,
    WEIGHTS_ENV,
    WEIGHTS_URL_BASE,
    WeightsHashError,
    WeightsNotFoundError,
    build_model,
    find_weights,
    hub_checkpoint_path,
    imagenet_state_dict,
    load_model,
    weights_url,
)

__all__ = [
    "MODELS",
    "build_model",
    "load_model",
    "find_weights",
    "imagenet_state_dict",
    "weights_url",
    "hub_checkpoint_path",
    "WEIGHT_FILES",
    "WEIGHTS_ENV",
    "WEIGHTS_URL_BASE",
    "WeightsNotFoundError",
    "WeightsHashError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "normalize",
    "denormalize",
    "prepare_image",
    "imagenet_classes",
    "classify",
    "decode",
    "layer_names",
    "describe",
    "format_table",
    "models_command",
    "POOLING_MODELS",
    "layer_aliases",
    "resolve_layer",
    "gram_parameter_count",
    "TEXTURE_LAYERS",
    "STYLE_LAYERS",
    "CONTENT_LAYERS",
    "AlexNet",
    "VGG16",
    "VGG19",
    "ResNet18",
    "MobileNetV2",
]
