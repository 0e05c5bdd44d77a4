"""Backward rules of the ReLU family: one engine for the gradient, deconvnet and guided backprop.

Backprop, deconvnet and guided backprop differ only in how a rectifying unit passes the signal
back (Mahendran & Vedaldi, "Salient deconvolutional networks", ECCV 2016, section 3). With
``y = f(x)`` the unit's output, ``g`` the signal arriving from above and ``f'(x)`` the local
derivative (``1[0 < x]`` for ReLU, ``1[0 < x < 6]`` for ReLU6, ``1[lo < x < hi]`` for hardtanh,
``1`` or ``slope`` for LeakyReLU):

========== ===================================== =====================================
rule       signal passed down                    reference
========== ===================================== =====================================
gradient   ``g * f'(x)``                         the chain rule
deconvnet  ``max(g, 0)`` (no forward mask)       Zeiler & Fergus, ECCV 2014
guided     ``max(g, 0) * f'(x)``                 Springenberg et al., ICLR 2015 (workshop)
========== ===================================== =====================================

:func:`backward_rule` applies a rule by patching the *functions* (``torch.nn.functional.relu``,
``relu_``, ``relu6``, ``hardtanh``, ``hardtanh_``, ``leaky_relu``, ``leaky_relu_``,
``torch.relu``, ``torch.relu_``, ``Tensor.relu``, ``Tensor.relu_``) for the duration of a
``with`` block, as TorchRay does, not by hooking modules: ``nn.ReLU``, ``nn.ReLU6``,
``nn.Hardtanh`` and ``nn.LeakyReLU`` call these functions, so modules, functional calls and
in-place activations are all covered (captum's and pytorch-grad-cam's module hooks see only
``nn.ReLU`` and return the plain gradient on MobileNetV2's ReLU6). The rule is attached at
*forward* time: run the forward pass inside the block (the backward may run after it).

The mask is taken from the unit's output (``0 < y < 6`` is ``0 < x < 6``), so in-place units
keep their in-place semantics (``x.copy_(y)``) without saving an overwritten input. Units seen
with gradients disabled, or on inputs that do not require grad, run unchanged.

Not covered (documented limits): ``torch.clamp``/``clamp_min`` used as a ReLU, ``torch.where``
rectifiers, and ``nn.functional`` calls bound to a local name before the patch (``from
torch.nn.functional import relu`` at import time) - these keep the plain gradient.
"""

import contextlib
import math
import threading

import torch
from torch.nn import functional as F

RULES = ("gradient", "deconvnet", "guided")

_LOCK = threading.RLock()
_ACTIVE = {"rule": None, "depth": 0, "count": 0}


class _Unit(torch.autograd.Function):
    """y = act(x) forward; the active rule's signal backward. Non-tensor args: the original
    function (run under no_grad), the kind of unit, its parameters and the rule."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, run, lo, hi, slope, rule):
        return run(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, _, ctx.lo, ctx.hi, ctx.slope, ctx.rule = inputs
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":
            return grad.clamp(min=0), None, None, None, None, None
        if ctx.slope is not None:
            local = torch.where(y > 0, torch.ones_like(y), torch.full_like(y, ctx.slope))
        else:
            local = ((y > ctx.lo) & (y < ctx.hi)).to(grad.dtype)
        g = grad.clamp(min=0) if ctx.rule == "guided" else grad
        return g * local, None, None, None, None, None


def _applies(x):
    return torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.requires_grad


def _unit(x, run, lo, hi, slope, inplace):
    _ACTIVE["count"] += 1
    y = _Unit.apply(x, run, lo, hi, slope, _ACTIVE["rule"])
    if inplace:
        return x.copy_(y)
    return y


def _make_patches(orig):
    def relu(input, inplace=False):
        if not _applies(input):
            return orig["F.relu"](input, inplace=inplace)
        return _unit(input, orig["torch.relu"], 0.0, math.inf, None, inplace)

    def relu_(input):
        return relu(input, inplace=True) if _applies(input) else orig["torch.relu_"](input)

    def relu6(input, inplace=False):
        if not _applies(input):
            return orig["F.relu6"](input, inplace=inplace)
        return _unit(input, lambda t: orig["F.relu6"](t), 0.0, 6.0, None, inplace)

    def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
        if not _applies(input):
            return orig["F.hardtanh"](input, min_val, max_val, inplace)
        run = lambda t: orig["F.hardtanh"](t, min_val, max_val)  # noqa: E731
        return _unit(input, run, float(min_val), float(max_val), None, inplace)

    def hardtanh_(input, min_val=-1.0, max_val=1.0):
        return hardtanh(input, min_val, max_val, inplace=True)

    def leaky_relu(input, negative_slope=0.01, inplace=False):
        if not _applies(input):
            return orig["F.leaky_relu"](input, negative_slope, inplace)
        if negative_slope < 0:
            raise ValueError(
                f"backward_rule: expected a LeakyReLU slope >= 0 (the rule reads "
                f"the mask from the output), got {negative_slope}"
            )
        run = lambda t: orig["F.leaky_relu"](t, negative_slope)  # noqa: E731
        return _unit(input, run, None, None, float(negative_slope), inplace)

    def leaky_relu_(input, negative_slope=0.01):
        return leaky_relu(input, negative_slope, inplace=True)

    def t_relu(self):
        return relu(self)

    def t_relu_(self):
        return relu_(self)

    return {
        "F.relu": relu,
        "F.relu_": relu_,
        "F.relu6": relu6,
        "F.hardtanh": hardtanh,
        "F.hardtanh_": hardtanh_,
        "F.leaky_relu": leaky_relu,
        "F.leaky_relu_": leaky_relu_,
        "torch.relu": relu,
        "torch.relu_": relu_,
        "Tensor.relu": t_relu,
        "Tensor.relu_": t_relu_,
    }


_OWNERS = {"F": F, "torch": torch, "Tensor": torch.Tensor}


def _get(key):
    owner, name = key.split(".")
    return getattr(_OWNERS[owner], name)


def _set(key, value):
    owner, name = key.split(".")
    setattr(_OWNERS[owner], name, value)


_KEYS = (
    "F.relu",
    "F.relu_",
    "F.relu6",
    "F.hardtanh",
    "F.hardtanh_",
    "F.leaky_relu",
    "F.leaky_relu_",
    "torch.relu",
    "torch.relu_",
    "Tensor.relu",
    "Tensor.relu_",
)


@contextlib.contextmanager
def backward_rule(rule: str):
    """Run the ReLU-family units of the forward passes inside the block with ``rule``.

    Args:
        rule: "gradient" (the chain rule; no patch is installed), "deconvnet" or "guided".

    Yields:
        A dict whose ``"count"`` is the number of units the rule was attached to so far (a
        check that the network has any).

    Raises:
        ValueError: an unknown rule, or a block nested inside one with another rule.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU6(inplace=True))
        >>> x = torch.rand(1, 3, 8, 8, requires_grad=True)
        >>> with backward_rule("deconvnet") as info:
        ...     net(x).sum().backward()
        >>> info["count"]
        1
    """
    if rule not in RULES:
        raise ValueError(f"backward_rule: expected rule in {RULES}, got {rule!r}")
    if rule == "gradient":
        yield {"count": 0}
        return
    with _LOCK:
        if _ACTIVE["depth"] and _ACTIVE["rule"] != rule:
            raise ValueError(
                f"backward_rule: a {_ACTIVE['rule']!r} block is already active; "
                f"cannot nest {rule!r} inside it"
            )
        outer = _ACTIVE["depth"] == 0
        if outer:
            orig = {k: _get(k) for k in _KEYS}
            _ACTIVE.update(rule=rule, count=0)
            for k, fn in _make_patches(orig).items():
                _set(k, fn)
        _ACTIVE["depth"] += 1
        info = {"count": 0}
        start = _ACTIVE["count"]
        try:
            yield info
        finally:
            info["count"] = _ACTIVE["count"] - start
            _ACTIVE["depth"] -= 1
            if outer:
                for k, fn in orig.items():
                    _set(k, fn)
                _ACTIVE.update(rule=None)
