"""Placeholder: being written (issue 3)."""
def dsift(*args, **kwargs):
    raise NotImplementedError("reference dsift is not built yet")
