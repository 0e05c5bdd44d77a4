"""Placeholder: being written (issue 3)."""
def hog(*args, **kwargs):
    raise NotImplementedError("hog is not built yet")
HOG = render_hog = None
