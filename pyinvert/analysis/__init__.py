"""Analysis of representations beyond single images. Reserved; nothing here yet.

What goes here: equivariance and invariance of a representation to image transformations
(Lenc & Vedaldi, "Understanding image representations by measuring their equivariance and
equivalence", CVPR 2015: a map from Phi(x) to Phi(g x) learned per transformation g), the
statistics of pre-images across restarts (:func:`pyinvert.invariance_map` is the per-pixel
case), and comparisons between representations of one image set.
"""
