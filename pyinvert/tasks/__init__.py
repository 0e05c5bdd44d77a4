"""Tasks, one module each, all the one engine (:mod:`pyinvert.optim.engine`) run on an
objective (:mod:`pyinvert.objectives`):

* :mod:`~pyinvert.tasks.inversion`: :func:`pyinvert.invert` (an Inversion objective);
* :mod:`~pyinvert.tasks.visualization`: :func:`pyinvert.visualize` (any objective) and
  :func:`pyinvert.actmax`;
* :mod:`~pyinvert.tasks.caricature`, :mod:`~pyinvert.tasks.dream`,
  :mod:`~pyinvert.tasks.invariance`.

What they share: :mod:`~pyinvert.tasks.inputs` (images from files, arrays, tensors; device;
size checks), :mod:`~pyinvert.tasks.common` (options, representation and recipe, priors, the
engine run) and :mod:`~pyinvert.tasks.result` (the :class:`Result` base). A new task (style
transfer, a decoder's refinement) is one more module here built from the same parts.
"""
