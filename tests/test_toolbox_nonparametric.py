"""texture_nonparametric(): the synthesis copies the source: every output pixel is a source
pixel (the one its origin names), and on a periodic source every output window exists in the
source; seeded runs repeat."""

import pytest
import torch
import torch.nn.functional as F

import pyinvert
from pyinvert.models import prepare_image
from pyinvert.data import sample_path
from pyinvert.toolbox.nonparametric import gaussian_window


def periodic(period=5, size=24, seed=0):
    tile = torch.rand(3, period, period, generator=torch.Generator().manual_seed(seed))
    reps = size // period + 1
    return tile.repeat(1, reps, reps)[:, :size, :size]


@pytest.mark.parametrize("batch", [1, 64])
def test_every_output_window_exists_in_a_periodic_source(batch):
    src = periodic()
    r = pyinvert.texture_nonparametric(src, 30, window=7, error_threshold=0.0, batch=batch, seed=1)
    out = r.images[0]
    for w in (3, 7):
        op = F.unfold(out[None].double(), w)[0].T
        sp = F.unfold(src[None].double(), w)[0].T
        assert torch.cdist(op, sp).min(1).values.max() < 1e-5, w


def test_every_output_pixel_is_the_source_pixel_its_origin_names():
    src = prepare_image(sample_path("coffee"), 48)[:, 4:36, 4:36]
    r = pyinvert.texture_nonparametric(src, (20, 26), window=9, seed=0)
    out, origin = r.images[0], r.origins[0]
    assert out.shape == (3, 20, 26) and (origin >= 0).all()
    copied = src[:, origin[..., 0], origin[..., 1]]
    assert torch.equal(out, copied)
    # it is a texture, not the source's copy in one piece: several source offsets are used
    shifts = origin - torch.stack(
        torch.meshgrid(torch.arange(20), torch.arange(26), indexing="ij"), -1
    )
    assert len({tuple(s) for s in shifts.reshape(-1, 2).tolist()}) > 1


def test_seeded_and_batched_over_sources():
    src = torch.stack([periodic(seed=2), periodic(4, seed=3)])
    a = pyinvert.texture_nonparametric(src, 16, window=5, seed=7)
    b = pyinvert.texture_nonparametric(
        src, 16, window=5, generator=torch.Generator().manual_seed(7)
    )
    assert a.images.shape == (2, 3, 16, 16) and torch.equal(a.images, b.images)
    c = pyinvert.texture_nonparametric(src, 16, window=5, seed=8)
    assert not torch.equal(a.origins, c.origins)


def test_gaussian_window():
    g = gaussian_window(11)
    r = torch.arange(11.0) - 5
    expected = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * (11 / 6.4) ** 2))
    assert torch.allclose(g, expected.double())


def test_errors():
    src = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="texture_nonparametric: expected an odd window"):
        pyinvert.texture_nonparametric(src, 8, window=4)
    with pytest.raises(ValueError, match="texture_nonparametric: expected window <= the source"):
        pyinvert.texture_nonparametric(src, 8, window=9)
    with pytest.raises(ValueError, match="texture_nonparametric: expected size >= 1"):
        pyinvert.texture_nonparametric(src, 0, window=3)
