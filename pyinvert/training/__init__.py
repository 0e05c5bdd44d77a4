"""The shared training loop. Reserved; nothing here yet.

What goes here: one loop (data, model, loss, optimizer factory, checkpoints written atomically,
a seeded ``torch.Generator`` for every random choice) used by :mod:`pyinvert.decoders`, the
learned priors of :mod:`pyinvert.priors` and the equivariance maps of :mod:`pyinvert.analysis`.
"""
