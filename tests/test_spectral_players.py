import pytest
import torch

from freqplug.spectral import (
    coalition_images,
    conjugate_pair_players,
    dct_band_groups,
    iter_coalition_images,
    make_players,
    mirror_indices,
    patch_grid_players,
    players_from_map,
    radial_band_players,
)

SHAPES = [(32, 32), (8, 8), (7, 9), (6, 5), (16, 12)]


def all_partitions(h, w):
    parts = [conjugate_pair_players(h, w), conjugate_pair_players(h, w, include_dc=True),
             radial_band_players(h, w, 2, metric="linf"), radial_band_players(h, w, 2, metric="l2"),
             radial_band_players(h, w, 2, include_dc=True)]
    if min(h, w) >= 4:
        parts += [patch_grid_players(h, w, 4), patch_grid_players(h, w, (2, 3))]
    return parts


@pytest.mark.parametrize("shape", SHAPES)
def test_partitions_are_conjugate_closed_and_cover_every_bin_once(shape):
    h, w = shape
    mirror = mirror_indices(h, w).reshape(-1)
    for players in all_partitions(h, w):
        pmap = players.player_map
        assert pmap.shape == (h, w)
        flat = pmap.reshape(-1)
        assert torch.equal(flat, flat[mirror]), players.name
        # each bin has exactly one id; ids are 0..P-1, all used
        assert set(torch.unique(flat[flat >= 0]).tolist()) == set(range(players.num_players))
        assert int(players.sizes().sum()) + int(players.fixed_bins().sum()) == h * w
        # one-hot coalitions: the masks of the players are disjoint and together cover the non-fixed bins
        masks = players.masks(torch.eye(players.num_players, dtype=torch.bool)) & ~players.fixed_bins()
        assert torch.equal(masks.sum(0), (~players.fixed_bins()).long())


def test_pairs_count_and_dc():
    players = conjugate_pair_players(32, 32)
    # 1024 bins: DC fixed, 3 other self-mirrored bins, 1020 bins in 510 pairs
    assert players.num_players == 3 + 510
    assert players.player_map[0, 0] == -1
    assert conjugate_pair_players(32, 32, include_dc=True).num_players == 514
    assert conjugate_pair_players(5, 5).num_players == 12  # odd: 24 non-DC bins in 12 pairs


def test_patch_grid_is_symmetrized_paper_grid():
    players = patch_grid_players(32, 32, 16)
    # 256 patches of 2x2 bins, joined with their mirror images: about half as many players
    assert 128 <= players.num_players <= 140
    sizes = players.sizes()
    assert int(sizes.max()) <= 8


def test_radial_bands_are_equal_width_linf_rings():
    players = radial_band_players(32, 32, 8)
    centered = torch.fft.fftshift(players.player_map)
    # along the row through DC the band grows every 2 bins from the centre (16, 16)
    row = centered[16]
    assert row[16] == -1 and row[17] == 0 and row[18] == 1 and row[19] == 1 and row[20] == 2
    assert row[0] == 7  # Nyquist, r = r_max, in the outermost band
    assert players.num_players == 8


def test_dct_groups():
    rings = dct_band_groups(4, 4)
    assert rings.layout == "dct"
    assert rings.player_map.tolist() == [[0, 1, 2, 3], [1, 1, 2, 3], [2, 2, 2, 3], [3, 3, 3, 3]]
    diag = dct_band_groups(3, 3, kind="diagonal")
    assert diag.player_map.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4]]


def test_user_map_validation():
    good = conjugate_pair_players(8, 8).player_map
    assert players_from_map(good).num_players == conjugate_pair_players(8, 8).num_players
    asym = good.clone()
    asym[0, 1] = 0
    asym[0, 7] = 1  # mirror of (0, 1) now in another player
    with pytest.raises(ValueError, match="conjugate-closed"):
        players_from_map(asym)
    with pytest.raises(ValueError, match="ids"):
        players_from_map(torch.where(good == 3, 99, good))
    with pytest.raises(TypeError, match="integer"):
        players_from_map(good.float())
    with pytest.raises(ValueError, match="DC"):
        make_players(conjugate_pair_players(8, 8, include_dc=True).player_map, 8, 8)
    with pytest.raises(ValueError, match="8x8"):
        make_players(conjugate_pair_players(8, 8), 16, 16)
    with pytest.raises(TypeError, match="players"):
        make_players(3.5, 8, 8)
    with pytest.raises(ValueError, match="too many"):
        radial_band_players(4, 4, 8)


def test_make_players_specs():
    assert make_players("pairs", 8, 8) == conjugate_pair_players(8, 8)
    assert make_players(4, 8, 8) == patch_grid_players(8, 8, 4)
    assert make_players(("bands", 2), 8, 8) == radial_band_players(8, 8, 2)
    assert make_players(("bands", 2, "l2"), 8, 8) == radial_band_players(8, 8, 2, metric="l2")


def test_expand_and_reduce_roundtrip():
    players = patch_grid_players(8, 8, 4)
    values = torch.randn(3, players.num_players, dtype=torch.float64)
    spread = players.expand(values)
    assert spread.shape == (3, 8, 8)
    assert torch.all(spread[:, 0, 0] == 0)
    sizes = players.sizes().to(torch.float64)
    assert torch.allclose(players.reduce(spread), values * sizes)


@pytest.mark.parametrize("shape", [(32, 32), (7, 9), (6, 5)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_reconstructions_are_real_and_full_coalition_is_identity(shape, dtype):
    h, w = shape
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, h, w, generator=g, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for players in all_partitions(h, w):
        p = players.num_players
        coalitions = torch.rand(5, p, generator=g) < 0.5
        coalitions[0] = True
        coalitions[1] = False
        images = coalition_images(x, players, coalitions, chunk_size=3)
        assert images.shape == (2, 5, 3, h, w) and images.dtype == dtype
        assert torch.allclose(images[:, 0], x, atol=tol)
        # empty coalition keeps DC only (the channel mean) unless DC is a player
        if players.player_map[0, 0] == -1:
            assert torch.allclose(images[:, 1], x.mean((-2, -1), keepdim=True).expand_as(x), atol=tol)
        # the same reconstruction through the full complex inverse DFT has no imaginary part
        masks = players.masks(coalitions)
        full = torch.fft.ifft2(torch.fft.fft2(x.to(torch.float64))[:, None] * masks[None, :, None])
        assert full.imag.abs().max() < 1e-12
        assert torch.allclose(images.to(torch.float64), full.real, atol=tol)


def test_per_image_coalitions_and_chunking_agree():
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    players = conjugate_pair_players(8, 8)
    coalitions = torch.rand(3, 4, players.num_players) < 0.5
    per_image = coalition_images(x, players, coalitions, chunk_size=5)
    for n in range(3):
        shared = coalition_images(x[n:n + 1], players, coalitions[n], chunk_size=64)
        assert torch.allclose(per_image[n], shared[0])
    chunks = list(iter_coalition_images(x, players, coalitions, chunk_size=5))
    assert [len(c[0]) for c in chunks] == [5, 5, 2]
    assert chunks[0][0].tolist() == [0, 0, 0, 0, 1] and chunks[0][1].tolist() == [0, 1, 2, 3, 0]


def test_baselines_fill_absent_bins():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    other = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    players = conjugate_pair_players(8, 8)
    empty = torch.zeros(1, players.num_players, dtype=torch.bool)
    # replacement: an empty coalition is the other image with x's DC (mean)
    replaced = coalition_images(x, players, empty, baseline=other)[:, 0]
    expected = other - other.mean((-2, -1), keepdim=True) + x.mean((-2, -1), keepdim=True)
    assert torch.allclose(replaced, expected)
    # gaussian: real, reproducible with a seeded generator, the same for every coalition of an image
    a = coalition_images(x, players, empty.repeat(2, 1), baseline="gaussian", noise_std=0.1,
                         generator=torch.Generator().manual_seed(3))
    b = coalition_images(x, players, empty.repeat(2, 1), baseline="gaussian", noise_std=0.1,
                         generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(a[:, 0], a[:, 1])
    assert 0.05 < float((a[:, 0] - x.mean((-2, -1), keepdim=True)).std()) < 0.2
    with pytest.raises(ValueError, match="baselines"):
        coalition_images(x, players, empty, baseline="ones")
    with pytest.raises(ValueError, match="baselines"):
        coalition_images(x, players, empty, baseline=other[:, :1])


def test_coalition_argument_errors():
    x = torch.rand(2, 3, 8, 8)
    players = conjugate_pair_players(8, 8)
    with pytest.raises(ValueError, match="one per player"):
        coalition_images(x, players, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch size"):
        coalition_images(x, players, torch.ones(3, 1, players.num_players, dtype=torch.bool))
    with pytest.raises(ValueError, match="8x8"):
        coalition_images(torch.rand(1, 3, 9, 9), players, torch.ones(1, players.num_players, dtype=torch.bool))
    with pytest.raises(TypeError, match="fft layout"):
        coalition_images(x, dct_band_groups(8, 8), torch.ones(1, 8, dtype=torch.bool))
