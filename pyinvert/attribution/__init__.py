"""Attribution: which pixels of an image a unit's value depends on. Reserved; nothing here yet.

What goes here, one module per part (captum's call shape, ``Method(representation).attribute(
images, target=...)``, returning tensors on the input's device for the whole batch):

* ``rules.py``: backward rules of one unit as data (backprop, deconvnet, guided backprop, as
  in Mahendran & Vedaldi's "Salient deconvolutional networks", ECCV 2016), applied by
  patching the function (``F.relu`` and in-place ops included), not by module hooks;
* ``gradients.py``: gradient, gradient x input, integrated gradients, SmoothGrad;
* ``perturbation.py``: occlusion and meaningful perturbations (an optimization on the one
  engine, :mod:`pyinvert.optim.engine`, with a mask parameterization);
* ``evaluation.py``: deletion / insertion curves and pointing games.

A method takes any representation (:func:`pyinvert.representations.as_representation`).
"""
