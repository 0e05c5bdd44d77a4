"""Planning a batch job: item seeds and fingerprints, dealing items to ranks, groups, chunks.

* Each item's seed is derived from the job's seed and the item's id alone
  (:func:`item_seed`), and its fingerprint from everything that determines its outputs
  (:func:`item_fingerprint`).
* The pending items, sorted by configuration (rep, recipe, overrides, restarts) and manifest
  order, are dealt round-robin to the ranks (:func:`deal`), so each gets an even share of
  each kind.
* A rank's prepared items are grouped by (rep, recipe, overrides, restarts, image size,
  channels) (:func:`groups`) and each group is cut into chunks of at most ``batch_size``
  images and ``max_batch_pixels`` pixels (:func:`chunks`); an image larger than the pixel
  budget is a chunk of its own. One chunk is one :func:`pyinvert.invert` call.

The chunking changes no HOG, HOGb or DSIFT result (bit for bit); a CNN item's result depends
on the size of its chunk and on the thread count through the network's round-off.
"""

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import torch

from pyinvert.batch import store as _store
from pyinvert.batch.manifest import Item


def item_seed(job_seed: int, item_id: str) -> int:
    """The item's seed: 62 bits of sha256(job seed, id); the same in every process.

    Example:
        >>> item_seed(0, "cat") == item_seed(0, "cat") != item_seed(1, "cat")
        True
    """
    digest = hashlib.sha256(f"pyinvert-batch/{int(job_seed)}/{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def item_fingerprint(
    item: Item,
    digest: Optional[str],
    *,
    recipe: str,
    restarts: int,
    steps: Optional[int],
    job_seed: int,
    backend: str,
) -> str:
    """The hash of everything that determines an item's outputs (a rerun skips the item
    when its record has this fingerprint).

    A CNN item's payload also says that the recipe is the named recipe's CNN variant: the
    records of earlier versions, which inverted CNN items with the plain recipe, do not
    match and those items are done again (other items' fingerprints are unchanged)."""
    payload = {
        "format": _store.ITEM_FORMAT,
        "id": item.id,
        "image_sha256": digest,
        "rep": item.rep,
        "recipe": recipe,
        "overrides": item.overrides,
        "restarts": restarts,
        "steps": steps,
        "seed": item_seed(job_seed, item.id),
        "backend": backend,
    }
    if item.rep.lower().startswith("cnn:"):
        payload["recipe_variant"] = "cnn"
    return _store.fingerprint(payload)


def deal(pending: Sequence[int], key, rank: int, world: int) -> List[int]:
    """This rank's share of the pending item indices: sorted by ``key(index)`` (then index),
    dealt round-robin; returned in manifest order."""
    order = sorted(pending, key=lambda i: (key(i), i))
    return sorted(order[rank::world])


@dataclass
class Task:
    """A prepared item: its recipe (overrides and steps applied), representation, seed and
    image size; ``image`` is the loaded image while it is kept in memory."""

    index: int
    item: Item
    recipe: object  # pyinvert.optim.recipes.Recipe
    rep: object  # the representation module
    restarts: int
    seed: int
    height: int
    width: int
    channels: int
    image: Optional[torch.Tensor] = None

    @property
    def group(self):
        """What items must share to be optimized together."""
        it = self.item
        return (
            it.rep,
            self.recipe.name,
            it.overrides_key,
            self.restarts,
            self.height,
            self.width,
            self.channels,
        )


def groups(tasks: Iterable[Task]) -> Dict[tuple, List[Task]]:
    """The tasks by :attr:`Task.group`, in a stable order (each group in manifest order)."""
    out: Dict[tuple, List[Task]] = OrderedDict()
    for task in sorted(tasks, key=lambda t: (tuple(map(str, t.group)), t.index)):
        out.setdefault(task.group, []).append(task)
    return out


def chunks(tasks: Sequence[Task], batch_size: int, max_pixels: int) -> Iterator[List[Task]]:
    """Consecutive chunks of at most ``batch_size`` tasks and ``max_pixels`` pixels
    (H x W x restarts summed); a task over the budget alone is a chunk of its own."""
    chunk, pixels = [], 0
    for t in tasks:
        p = t.height * t.width * t.restarts
        if chunk and (len(chunk) >= batch_size or pixels + p > max_pixels):
            yield chunk
            chunk, pixels = [], 0
        chunk.append(t)
        pixels += p
    if chunk:
        yield chunk
