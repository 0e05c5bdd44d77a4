"""The optimization machinery every task shares:

* :mod:`~pyinvert.optim.options`: :class:`RunOptions` (steps, restarts, batch size, seeds,
  device, dtype, backend, progress, callback);
* :mod:`~pyinvert.optim.parameterizations`: what is optimized (the pixel canvas; a
  decorrelated Fourier image);
* :mod:`~pyinvert.optim.engine`: the batched engine (rows = images x restarts, chunks, seeds);
* :mod:`~pyinvert.optim.loop` and :mod:`~pyinvert.optim.rules`: the loop (per-row NaN
  freezing) and the papers' update rules;
* :mod:`~pyinvert.optim.jitter`: random shifts; :mod:`~pyinvert.optim.recipes`: the papers'
  constants, as data.
"""
