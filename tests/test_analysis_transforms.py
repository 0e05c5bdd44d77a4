"""The transformation group and its action on images and feature grids (pyinvert.analysis)."""

import pytest
import torch

from pyinvert.analysis.grids import Geometry, hog_channel_permutation, warp_grid
from pyinvert.analysis.transforms import (
    HFLIP,
    IDENTITY,
    parse_transform,
    parse_transforms,
    rotation,
    sample,
)

EXACT = ["hflip", "vflip", "rot90", "rot180", "rot270", "hflip*rot90", "vflip*rot90*hflip"]


@pytest.mark.parametrize("name", EXACT)
def test_exact_transforms_equal_their_resampling(name):
    # the permutation path (flip / transpose) and the bilinear path agree at pixel centres
    g = parse_transform(name)
    assert g.exact
    x = torch.rand(2, 3, 9, 9, dtype=torch.float64)
    resampled = sample(x, g.source_coordinates((9, 9), (9, 9)), (9, 9))
    torch.testing.assert_close(g.apply(x), resampled, rtol=0, atol=1e-12)


def test_rotation_is_counter_clockwise_as_displayed():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 4] = 1  # right of the centre
    y = parse_transform("rot90").apply(x)
    assert y[0, 0, 0, 2] == 1  # moved to the top


def test_composition_and_inverse():
    x = torch.rand(1, 1, 6, 6)
    g, h = parse_transform("rot90"), parse_transform("hflip")
    assert torch.equal(parse_transform("rot90*hflip").apply(x), g.apply(h.apply(x)))
    assert not torch.equal((g * h).apply(x), (h * g).apply(x))  # the group is not abelian
    r = rotation(37.0)
    torch.testing.assert_close((r.inverse() * r).A, IDENTITY.A, rtol=0, atol=1e-12)
    assert not r.exact and parse_transform("scale0.71").footprint() == pytest.approx(1 / 0.71)
    assert parse_transform("rot45").footprint() == pytest.approx(2**0.5)


def test_parse_list_and_errors():
    gs = parse_transforms("hflip,translate0.1,0,scale0.71,rot(45)")
    assert [g.name for g in gs] == ["hflip", "translate0.1,0", "scale0.71", "rot45"]
    assert gs[1].shift == (0.1, 0.0) and not gs[1].exact
    with pytest.raises(ValueError, match="parse_transform: unknown transform 'shear2'"):
        parse_transform("shear2")
    with pytest.raises(TypeError, match="parse_transform: expected a str or a Transform"):
        parse_transform(3)
    with pytest.raises(ValueError, match="scaling: expected a factor > 0"):
        parse_transform("scale0")
    with pytest.raises(ValueError, match=r"Transform.apply: expected images of shape"):
        HFLIP.apply(torch.rand(3, 4, 4))


def test_warp_grid_is_the_cell_permutation_on_aligned_grids():
    f = torch.rand(2, 5, 4, 4)
    geo = Geometry(8.0, 3.5)  # HOG cells of 8 pixels on a 32 x 32 image
    for name in EXACT:
        g = parse_transform(name)
        w, valid = warp_grid(f, g, geo, (32, 32), (4, 4))
        assert bool(valid.all())
        assert torch.equal(w, g.apply(f))


def test_warp_grid_marks_cells_moved_off_the_grid():
    f = torch.rand(1, 2, 8, 8)
    w, valid = warp_grid(f, parse_transform("rot45"), Geometry(4.0, 1.5), (32, 32), (8, 8))
    assert not bool(valid.all()) and bool(valid[3:5, 3:5].all())
    assert not bool(valid[0, 0]) and float(w[..., 0, 0].abs().sum()) == 0
    # a grid offset of 0 (cell i on pixel 4 i) maps hflip's cell i to w - i, not w - 1 - i
    w, valid = warp_grid(f, HFLIP, Geometry(4.0, 0.0), (32, 32), (8, 8))
    assert not bool(valid[:, 0].any()) and bool(valid[:, 1:].all())
    assert torch.equal(w[..., 1:], f.flip(-1)[..., :7])


def test_hog_permutation_is_exact_on_continuous_images():
    from pyinvert.representations import make_representation

    rep = make_representation("hog")
    x = torch.rand(2, 1, 48, 64, dtype=torch.float64) * 255
    f = rep(x)
    for name in ("hflip", "vflip", "rot180"):
        g = parse_transform(name)
        fg = rep(g.apply(x))
        torch.testing.assert_close(
            g.apply(f)[:, hog_channel_permutation(g)], fg, rtol=0, atol=1e-12
        )
    assert hog_channel_permutation(parse_transform("rot90")) is None
