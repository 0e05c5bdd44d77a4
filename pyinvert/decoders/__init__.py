"""Decoders: networks trained to invert a representation in one forward pass (Dosovitskiy &
Brox, "Inverting Visual Representations with Convolutional Networks", CVPR 2016). Reserved;
nothing here yet.

What goes here: the decoder architectures (``up_convolutional.py``) and their use as a
parameterization of the engine (:mod:`pyinvert.optim.parameterizations`: the optimized tensor
is a latent code, the image the decoder's output), so that a decoder's guess can be refined by
the optimization; training uses :mod:`pyinvert.training`.
"""
