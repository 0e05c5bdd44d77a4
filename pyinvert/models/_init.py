"""Random initialization shared by the architectures (the usual He / small-normal scheme)."""

from torch import nn


def init_weights(model: nn.Module) -> nn.Module:
    """He-normal convolutions (fan-out), N(0, 0.01) linear layers, identity batch norms.

    Uses the global RNG, so ``torch.manual_seed`` makes it reproducible. Under a ``meta``
    device context nothing is allocated and the calls are no-ops.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return model
