"""Multifaceted activation maximization (Nguyen, Yosinski & Clune 2016) on the one engine:
the real images that activate a unit most are clustered in the representation's code
(scikit-learn's k-means), each cluster's mean image starts one optimization, and a centre
bias lets the image change first near its centre, the region spreading outwards over the
iterations; Yosinski et al.'s regularizers act after every step."""

from typing import Callable, Optional

import torch
from torch import Tensor

from pyinvert.objectives import Activation
from pyinvert.representations import as_representation
from pyinvert.tasks.visualization import VisualizationResult, actmax, visualize
from pyinvert.toolbox.common import Source, check_int
from pyinvert.toolbox.regularizers import (
    YosinskiParams,
    YosinskiRegularizer,
    yosinski_params,
    yosinski_recipe,
)


def centre_mask(
    H: int, W: int, t: int, T: int, start: float = 0.125, end: float = 1.0, dtype=torch.float32
) -> Tensor:
    """[H, W] Gaussian weights exp(-r^2 / (2 s^2)) around the centre, r in units of the image's
    half-side and s growing linearly from ``start`` (step 1) to ``end`` (step T)."""
    s = start + (end - start) * (t - 1) / max(T - 1, 1)
    ys = (torch.arange(H, dtype=dtype) - (H - 1) / 2) / (H / 2)
    xs = (torch.arange(W, dtype=dtype) - (W - 1) / 2) / (W / 2)
    r2 = ys[:, None] ** 2 + xs[None] ** 2
    return torch.exp(-r2 / (2 * s * s))


class CentreBias:
    """A step-rescaling callback: ``x <- previous + mask_t * (x - previous)`` (the
    :func:`centre_mask` of the step), then ``then`` (e.g. a :class:`YosinskiRegularizer`)."""

    def __init__(self, T: int, then=None):
        self.T, self.then, self.previous = T, then, None

    def start(self, x0: Tensor) -> None:
        self.previous = x0.detach().clone()

    def __call__(self, t, x, loss, measure, active):
        with torch.no_grad():
            if self.previous is not None and self.previous.shape == x.shape:
                m = centre_mask(*x.shape[-2:], t, self.T, dtype=x.dtype).to(x.device)
                x.copy_(self.previous + m * (x - self.previous))
        stop = bool(self.then(t, x, loss, measure, active)) if self.then is not None else False
        self.previous = x.detach().clone()
        return stop


def facet_starts(
    images,
    representation,
    unit: int,
    k: int = 4,
    top: int = 15,
    *,
    size: Optional[int] = 224,
    seed: int = 0,
    batch_size: int = 32,
):
    """The k cluster-mean images of the ``top`` images activating ``unit`` most.

    Returns:
        (starts [k, 3, S, S] in [0, 1], the top images' indices [top], their cluster labels).
    """
    fn = "multifaceted"
    rep = as_representation(representation, fn=fn)
    src = Source(images, size, fn)
    check_int(k, "k", fn)
    check_int(top, "top", fn)
    top = min(top, len(src))
    if k > top:
        raise ValueError(f"{fn}: expected k <= top ({top} images), got k={k}")
    acts, codes = [], []
    with torch.no_grad():
        for s in range(0, len(src), batch_size):
            c = rep(rep.preprocess(src.load(range(s, min(s + batch_size, len(src))))))
            a = c[:, unit] if c.dim() == 2 else c[:, unit].flatten(1).mean(1)
            acts.append(a.float().cpu())
            codes.append(c.flatten(1).float().cpu())
    acts, codes = torch.cat(acts), torch.cat(codes)
    best = torch.argsort(acts, descending=True, stable=True)[:top]
    from sklearn.cluster import KMeans  # imported when used: slow to import

    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(
        codes[best].double().numpy()
    )
    labels = torch.from_numpy(labels).long()
    chosen = src.load(best.tolist())
    starts = torch.stack([chosen[labels == j].mean(0) for j in range(k)])
    return starts, best, labels


def multifaceted(
    images,
    representation,
    unit: int,
    k: int = 4,
    *,
    top: int = 15,
    hyperparameters=3,
    lr: Optional[float] = None,
    steps: Optional[int] = None,
    size: int = 224,
    centre_bias: bool = True,
    seed: int = 0,
    progress: bool = False,
    device=None,
) -> VisualizationResult:
    """k facets of a unit: activation maximization from the k cluster means of the images that
    activate it most, with a centre bias and Yosinski et al.'s regularizers.

    Args:
        images: the pool of real images (a folder, a list of paths or a Tensor).
        representation: one CNN layer (as :func:`pyinvert.actmax` takes).
        unit: the channel / class index.
        k: facets (k-means clusters). Default: 4.
        top: the most activating images clustered. Default: 15.
        hyperparameters: Yosinski et al.'s set (1-4 or :class:`YosinskiParams`). Default: 3.
        lr: the learning rate; None: the set's. Default: None.
        steps: iterations; None: the set's. Default: None.
        size: the images' side. Default: 224.
        centre_bias: rescale each step by the growing centre mask. Default: True.
        seed: k-means's random state. Default: 0.
        progress: a progress bar. Default: False.
        device: where to optimize. Default: None.

    Returns:
        A :class:`pyinvert.VisualizationResult` of k images; ``originals`` holds the starts.

    References:
        A. Nguyen, J. Yosinski, J. Clune, "Multifaceted Feature Visualization: Uncovering the
        Different Types of Features Learned By Each Neuron in Deep Neural Networks", ICML
        Visualization for Deep Learning Workshop 2016, Sec. 2.
    """
    rep = as_representation(representation, fn="multifaceted")
    starts, best, labels = facet_starts(images, rep, unit, k, top, size=size, seed=seed)
    p = yosinski_params(hyperparameters)
    if steps is not None or lr is not None:
        p = YosinskiParams(**{**p.__dict__, "iterations": steps or p.iterations, "lr": lr or p.lr})
    reg = YosinskiRegularizer(p)
    reg.start(rep.preprocess(starts.to(device or "cpu")))
    callback = reg
    if centre_bias:
        callback = CentreBias(p.iterations, then=reg)
        callback.start(rep.preprocess(starts.to(device or "cpu")))
    res = visualize(
        Activation(torch.full((k,), unit, dtype=torch.long)),
        representation=rep,
        init=starts,
        recipe=yosinski_recipe(p),
        callback=callback,
        progress=progress,
        device=device,
        priors=False,
        _fn="multifaceted",
    )
    res.settings.update(
        {
            "unit": unit,
            "k": k,
            "top": int(best.numel()),
            "top_indices": best.tolist(),
            "clusters": labels.tolist(),
            "centre_bias": centre_bias,
            "yosinski": dict(p.__dict__),
        }
    )
    return res


def actmax_yosinski(
    representation,
    units,
    hyperparameters=3,
    *,
    image_size=224,
    objective: str = "activation",
    steps: Optional[int] = None,
    lr: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
    callback: Optional[Callable] = None,
    progress: bool = False,
    **kwargs,
) -> VisualizationResult:
    """Activation maximization regularized as Yosinski et al.: :func:`pyinvert.actmax` on the
    recipe of one of Table 1's sets (:data:`YOSINSKI_SETS`), with the set's operators applied
    after every step by :class:`YosinskiRegularizer`.

    Args:
        representation: a CNN layer (as :func:`pyinvert.actmax` takes).
        units: channel / class indices.
        hyperparameters: 1, 2, 3 or 4 (Table 1's sets; 3 made most of the paper's figures),
            "yosinski1" ... "yosinski4", or a :class:`YosinskiParams`. Default: 3.
        image_size: H = W of the images. Default: 224.
        objective: "activation" (the paper's raw unit / class score) or "log_probability".
            Default: "activation".
        steps: iterations; None: the set's. Default: None.
        lr: the learning rate (the "progress" policy's cap); None: the set's. Table 1's
            constant 100 is for CaffeNet's 0-255 input; MobileNetV2's class scores have
            smaller pixel gradients (measured at 96 px, 60 steps of set 3: lr 100 leaves
            p(goldfish) = 0.001, lr 1e4 reaches 1.00). Default: None.
        generator: seeds the initial noise. Default: None.
        callback: a further per-step callback. Default: None.
        progress: a progress bar. Default: False.
        **kwargs: passed on to :func:`pyinvert.actmax` (neuron, device, dtype, ...).

    Returns:
        :func:`pyinvert.actmax`'s :class:`pyinvert.VisualizationResult`; its settings say
        which set was used.
    """
    p = yosinski_params(hyperparameters)
    if steps is not None or lr is not None:
        p = YosinskiParams(**{**p.__dict__, "iterations": steps or p.iterations, "lr": lr or p.lr})
    res = actmax(
        representation,
        units,
        image_size=image_size,
        regularizers=p,
        objective=objective,
        generator=generator,
        callback=callback,
        progress=progress,
        **kwargs,
    )
    res.settings["yosinski"] = {
        **p.__dict__,
        "set": hyperparameters if not isinstance(hyperparameters, YosinskiParams) else None,
    }
    return res
