"""Placeholder: being written (issue 3)."""
def hog(*args, **kwargs):
    raise NotImplementedError("reference hog is not built yet")
