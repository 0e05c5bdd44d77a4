"""Tasks, one module each, all run on the one engine (:mod:`pyinvert.optim.engine`)."""
