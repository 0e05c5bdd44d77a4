"""Placeholder: being written (issue 3)."""
def dsift(*args, **kwargs):
    raise NotImplementedError("dsift is not built yet")
DenseSIFT = None
