"""DeepDream (Mordvintsev, Olah & Tyka 2015): amplify a layer over a pyramid of scales."""

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from pyinvert.objectives import DeepDream
from pyinvert.optim.options import RunOptions
from pyinvert.optim.recipes import get_recipe
from pyinvert.representations import as_representation
from pyinvert.tasks.inputs import prepare_images
from pyinvert.tasks.visualization import VisualizationResult, visualize


def dream(
    images,
    representation,
    *,
    octaves: int = 4,
    octave_scale: float = 1.4,
    steps: int = 10,
    lr: Optional[float] = None,
    jitter: Optional[int] = None,
    recipe="dream",
    generator: Optional[torch.Generator] = None,
    device=None,
    dtype: torch.dtype = torch.float32,
    weights="imagenet",
    backend: str = "fused",
    progress: bool = True,
    names: Optional[Sequence[str]] = None,
    options: Optional[RunOptions] = None,
    **overrides,
) -> VisualizationResult:
    r"""DeepDream: amplify a layer (``maximize 1/2 |Phi(x)|^2``) over a pyramid of scales.

    The image is processed from the smallest octave (``octave_scale ** (octaves - 1)`` times
    smaller) up to its size; at each octave the detail added so far (the dreamed image minus
    the resized original) is upsampled and added to the original at that scale, then
    ``steps`` normalized-gradient steps with random jitter are taken.

    Args:
        images: images in [0, 1], [B, C, H, W] (or paths / arrays, one size).
        representation: a CNN or "cnn:MODEL:LAYER".
        octaves: number of scales. Default: 4.
        octave_scale: ratio between successive scales. Default: 1.4.
        steps: steps per octave. Default: 10.
        lr: the step length in pixel units (0-255); None: the recipe's (1.5). Default: None.
        jitter: jitter amount J (random shifts in [0, J)); None: the recipe's (32).
            Default: None.
        recipe: the recipe. Default: "dream".
        generator: seeds the jitter. Default: None.
        device: where to optimize. Default: None.
        dtype: float32 or float64. Default: torch.float32.
        weights: weights of a "cnn:..." name. Default: "imagenet".
        backend: the priors' implementation. Default: "fused".
        progress: a progress bar. Default: True.
        names: a name per image. Default: None.
        options: a :class:`pyinvert.optim.options.RunOptions` (its ``steps`` are the steps
            per octave). Default: None.
        **overrides: recipe fields.

    Returns:
        A :class:`VisualizationResult` of the last octave (``originals`` are the inputs,
        ``measure`` the final mean squared activation).

    References:
        Mordvintsev, Olah & Tyka, "Inceptionism: Going Deeper into Neural Networks", 2015.
    """
    fn = "dream"
    if isinstance(octaves, bool) or not isinstance(octaves, int) or octaves < 1:
        raise ValueError(f"{fn}: expected octaves to be an int >= 1, got {octaves!r}")
    if not octave_scale > 1.0 and octaves > 1:
        raise ValueError(f"{fn}: expected octave_scale > 1, got {octave_scale!r}")
    opts = RunOptions.resolve(
        fn,
        options,
        generator=generator,
        device=device,
        dtype=dtype,
        backend=backend,
        progress=progress,
    )
    steps = opts.steps if opts.steps is not None and steps == 10 else steps
    generator, dtype = opts.generator, opts.dtype
    rep = as_representation(representation, backend=opts.backend, weights=weights, fn=fn)
    prep = prepare_images(images, rep, fn, opts.device, dtype, check=False)
    batch, dev = prep.batch, prep.device
    H, W = batch.shape[-2:]
    rec = get_recipe(recipe, representation=rep, **overrides)
    stage = rec.stages[0]
    rec = get_recipe(
        rec,
        stages=((stage.lr if lr is None else float(lr), int(steps), True),),
        **({"jitter": int(jitter)} if jitter is not None else {}),
    )
    gen = (
        generator
        if generator is not None
        else torch.Generator().manual_seed(int(torch.randint(2**62, (1,)).item()))
    )
    base = prep.x
    min_size = rep.min_size
    sizes = []
    for k in range(octaves - 1, -1, -1):
        s = (
            max(int(round(H / octave_scale**k)), min_size),
            max(int(round(W / octave_scale**k)), min_size),
        )
        sizes.append(s)
    detail = None
    res = None
    total = 0.0
    for s in sizes:
        b = (
            F.interpolate(base, size=s, mode="bilinear", align_corners=False)
            if s != tuple(base.shape[-2:])
            else base
        )
        d = (
            torch.zeros_like(b)
            if detail is None
            else F.interpolate(detail, size=s, mode="bilinear", align_corners=False)
        )
        # As images in [0, 1] (visualize preprocesses them again): the usual clip to the
        # valid range between octaves.
        start = rep.postprocess(b + d)
        octave = RunOptions(
            generator=torch.Generator().manual_seed(
                int(torch.randint(2**62, (1,), generator=gen).item())
            ),
            device=dev,
            dtype=dtype,
            backend=opts.backend,
            progress=opts.progress,
        )
        res = visualize(
            DeepDream(),
            representation=rep,
            init=start,
            recipe=rec,
            priors=False,
            options=octave,
            names=names,
            _fn=fn,
        )
        total += res.seconds
        x = rep.preprocess(res.images.reshape(-1, *res.images.shape[-3:]).to(dev, dtype))
        detail = x - b
    res.originals = rep.postprocess(base)
    res.seconds = total
    res.settings.update(
        {
            "octaves": octaves,
            "octave_scale": octave_scale,
            "sizes": [list(s) for s in sizes],
            "steps_per_octave": steps,
        }
    )
    return res
