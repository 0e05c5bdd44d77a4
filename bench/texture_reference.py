"""The pure-PyTorch reference of bench/bench_texture.py: Gram texture synthesis with the
PyTorch tutorial's structure (a loss module per layer, here forward hooks since MobileNetV2 is
not a plain Sequential; the network trimmed at the last loss layer), with the corrected layers
(our post-ReLU6 defaults, Gram averaged over positions, 1/(4 N^2) weighting), driven by
``torch.optim.LBFGS`` (strong Wolfe, history 10) on one image."""

import time

import torch

from pyinvert.tasks.texture import MOBILENET_TEXTURE_LAYERS

clock = time.process_time


class _Stop(Exception):
    pass


class TutorialTexture:
    """The tutorial's way: a loss per layer, computed by hooks during the network's forward,
    which ends at the last loss layer (the tutorial trims the network there)."""

    def __init__(self, model, layers, source):
        self.model = model
        modules = dict(model.named_modules())
        self.layers = layers
        self.losses = {}
        self.targets = {}
        self._capture = True
        self.handles = [modules[name].register_forward_hook(self._hook(name)) for name in layers]
        self.mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        with torch.no_grad():
            self._forward(source)
        self._capture = False

    def _hook(self, name):
        def hook(module, inputs, output):
            F = output.flatten(2)  # the tutorial's gram_matrix, divided by the positions
            G = torch.matmul(F, F.transpose(1, 2)) / F.shape[2]
            if self._capture:
                self.targets[name] = G.detach()
            else:
                N = G.shape[1]
                self.losses[name] = ((G - self.targets[name]) ** 2).sum() / (4 * N * N)
            if name == self.layers[-1]:
                raise _Stop

        return hook

    def _forward(self, image):
        try:
            self.model((image - self.mean) / self.std)
        except _Stop:
            pass

    def close(self):
        for h in self.handles:
            h.remove()

    def loss(self, image):
        self._forward(image)
        return sum(self.losses.values())


def reference_run(model, source, steps, seed):
    ref = TutorialTexture(model, list(MOBILENET_TEXTURE_LAYERS), source)
    g = torch.Generator().manual_seed(seed)
    img = source.mean() + 0.18 * (2 * torch.rand(source.shape, generator=g) - 1)
    img.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [img],
        lr=1.0,
        max_iter=steps,
        history_size=10,
        line_search_fn="strong_wolfe",
        tolerance_grad=0.0,
        tolerance_change=1e-12,
    )
    evals = [0]

    def closure():
        opt.zero_grad()
        loss = ref.loss(img)
        loss.backward()
        evals[0] += 1
        return loss

    t0 = clock()
    opt.step(closure)
    seconds = clock() - t0
    iters = opt.state[opt._params[0]]["n_iter"]
    final = float(ref.loss(img.detach()))
    ref.close()
    return seconds, iters, evals[0], final
