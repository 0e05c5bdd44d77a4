"""Preparing one item: its recipe, representation and image, every problem an item failure.

:class:`Preparer` turns an item into a :class:`pyinvert.batch.plan.Task` or raises
:class:`pyinvert.batch.overrides.ItemError` with the reason, in this order:

1. the overrides (field, type, finiteness, range: :func:`pyinvert.batch.overrides.check_overrides`);
2. the recipe (:func:`pyinvert.optim.recipes.get_recipe`; a CNN representation gets the CNN
   variant of the named recipe, as :func:`pyinvert.invert` does), scaled to ``--steps``;
3. the representation (:func:`pyinvert.representations.make_representation`, once per
   kind and kept; an unknown name or layer, or missing weights, fail every item of it);
4. the image: found, readable, at most :data:`pyinvert.batch.options.MAX_IMAGE_PIXELS`
   pixels (and at most :data:`pyinvert.batch.options.MAX_BATCH_PIXELS_LIMIT` times its
   restarts), every pixel finite (a float TIFF, say, may hold NaN or Inf: the reason is
   "non-finite pixel values"), large enough for the representation, and finite once the
   representation has preprocessed it (a float pixel of 3e38 is finite, but not 255 times
   it: "pixel values out of range").
"""

import torch

from pyinvert import representations
from pyinvert.batch.manifest import Item
from pyinvert.batch.options import MAX_BATCH_PIXELS_LIMIT, MAX_IMAGE_PIXELS
from pyinvert.batch.overrides import ItemError, check_overrides
from pyinvert.batch.plan import Task, item_seed
from pyinvert.io import load_image
from pyinvert.optim.recipes import get_recipe

# Loaded images kept in memory between preparing and running (float32 values); beyond this
# they are read again when their batch runs.
KEEP_VALUES = 1 << 28


NON_FINITE = "non-finite pixel values"


def check_pixels(image: torch.Tensor, path) -> None:
    """Raise :class:`ItemError` when some pixel of ``image`` is NaN or infinite."""
    finite = torch.isfinite(image)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        nan = int(torch.isnan(image).sum())
        raise ItemError(
            f"{NON_FINITE} in {path}: {bad} of {image.numel()} values are NaN "
            f"({nan}) or infinite ({bad - nan})"
        )


def load_checked(path, final: bool = True) -> torch.Tensor:
    """The image at ``path`` ([C, H, W] in [0, 1]), checked: readable, not too large, finite."""
    if not path.is_file():
        raise ItemError(f"image not found: {path}", final=final)
    try:
        image = load_image(path)
    except (OSError, ValueError, TypeError) as error:
        text = str(error)
        if "non-finite pixel" in text:  # pyinvert.io.load_image's own check
            raise ItemError(
                f"{NON_FINITE} in {path}: {text.replace('load_image: ', '', 1)}", final=final
            ) from None
        raise ItemError(f"cannot read the image: {text}", final=final) from None
    except Exception as error:
        raise ItemError(
            f"cannot read the image {path}: {type(error).__name__}: {error}", final=final
        ) from None
    H, W = image.shape[-2:]
    if H * W > MAX_IMAGE_PIXELS:
        raise ItemError(
            f"image too large: {path} is {H}x{W} pixels, more than the "
            f"{MAX_IMAGE_PIXELS} a batch item takes"
        )
    check_pixels(image, path)
    return image


class Preparer:
    """Prepares a job's items (see the module docstring); keeps one representation per kind
    and up to :data:`KEEP_VALUES` loaded pixel values."""

    def __init__(self, opts, device: torch.device):
        self.opts = opts
        self.device = device
        self._reps = {}
        self._kept = 0

    def recipe_name(self, item: Item) -> str:
        return item.recipe or self.opts.recipe

    def restarts(self, item: Item) -> int:
        return item.restarts or self.opts.restarts

    def _recipe(self, item: Item, overrides: dict, representation=None):
        name = self.recipe_name(item)
        try:
            recipe = get_recipe(name, representation=representation, **dict(overrides))
            if self.opts.steps is not None:
                recipe = recipe.scaled(self.opts.steps)
        except (ValueError, TypeError) as error:
            raise ItemError(
                f"recipe {name!r} with overrides {item.overrides_key}: {error}"
            ) from None
        except Exception as error:  # e.g. a representation without what its recipe needs
            raise ItemError(
                f"recipe {name!r} with overrides {item.overrides_key}: "
                f"{type(error).__name__}: {error}"
            ) from None
        return recipe

    def representation(self, item: Item, recipe):
        """The item's representation module (made once per rep, recipe and overrides)."""
        key = (item.rep, recipe.name, item.overrides_key)
        if key not in self._reps:
            try:
                rep = representations.make_representation(
                    item.rep, backend=self.opts.backend, recipe=recipe
                )
                if hasattr(rep, "to"):
                    rep = rep.to(self.device)
                self._reps[key] = rep
            except (
                ValueError,
                TypeError,
                KeyError,
                LookupError,
                FileNotFoundError,
                ImportError,
            ) as error:
                self._reps[key] = ItemError(f"representation {item.rep!r}: {error}")
            except Exception as error:  # e.g. a network or device problem: may pass later
                self._reps[key] = ItemError(
                    f"representation {item.rep!r}: {type(error).__name__}: {error}", final=False
                )
        rep = self._reps[key]
        if isinstance(rep, ItemError):
            raise rep
        return rep

    def prepare(self, index: int, item: Item) -> Task:
        """The item's task; raises :class:`ItemError` with the reason it cannot run."""
        overrides = check_overrides(item.overrides)
        recipe = self._recipe(item, overrides)
        rep = self.representation(item, recipe)
        if getattr(rep, "kind", None) == "cnn":
            recipe = self._recipe(item, overrides, representation=rep)
        image = load_checked(item.path)
        C, H, W = image.shape
        restarts = self.restarts(item)
        if H * W * restarts > MAX_BATCH_PIXELS_LIMIT:
            raise ItemError(
                f"image too large for {restarts} restarts: {H}x{W} pixels x "
                f"{restarts} is more than the {MAX_BATCH_PIXELS_LIMIT} pixels "
                f"one optimization takes"
            )
        need = int(getattr(rep, "min_size", 1))
        if H < need or W < need:
            raise ItemError(
                f"image too small: {item.path} is {H}x{W} pixels, the "
                f"representation {item.rep!r} needs at least {need}x{need}"
            )
        with torch.no_grad():
            x0 = rep.preprocess(image[None].to(self.device))
        if not bool(torch.isfinite(x0).all()):
            raise ItemError(
                f"pixel values out of range: {item.path} has values in "
                f"[{float(image.min()):.4g}, {float(image.max()):.4g}], which the "
                f"representation {item.rep!r} turns into NaN/Inf (expected "
                f"[0, 1])"
            )
        keep = self._kept + image.numel() <= KEEP_VALUES
        if keep:
            self._kept += image.numel()
        return Task(
            index=index,
            item=item,
            recipe=recipe,
            rep=rep,
            restarts=restarts,
            seed=item_seed(self.opts.seed, item.id),
            height=H,
            width=W,
            channels=C,
            image=image if keep else None,
        )
