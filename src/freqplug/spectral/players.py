"""Players: partitions of frequency bins for attribution games.

A :class:`Players` object maps every bin of an (H, W) spectrum to a player id
``0 .. P-1`` or to ``-1`` (always present, e.g. DC). In the default *fft* layout
(``torch.fft.fft2`` order, DC at [0, 0]) every partition is **conjugate-closed**: a bin
and its mirror (-u, -v) belong to the same player, so every coalition of a real image
reconstructs a real image exactly (Chen2022 takes ``.real`` of non-symmetric masks;
this never needs to). The *dct* layout is for the real DCT spectrum (Wang2020a), where
no mirror exists.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch

from .._validation import check_choice, check_positive_int
from .fourier import frequency_indices, frequency_radius, mirror_indices

LAYOUTS = ("fft", "dct")


class Players:
    """A partition of the (H, W) frequency bins into players.

    Args:
        player_map: integer tensor (H, W); ids 0..P-1 for players (every id used),
            -1 for bins that are always present.
        layout: ``"fft"`` (``torch.fft.fft2`` layout; the map must be conjugate-closed) or
            ``"dct"`` (orthonormal DCT-II coefficients, see :func:`freqplug.spectral.dct2`).
        name: short description, kept for reports and saved files.
        require_fixed_dc: raise if DC ([0, 0]) is a player rather than -1.
    """

    def __init__(self, player_map: torch.Tensor, *, layout: str = "fft", name: str = "custom",
                 require_fixed_dc: bool = False):
        check_choice(layout, "layout", LAYOUTS)
        if not isinstance(player_map, torch.Tensor):
            raise TypeError(f"`players` map must be a torch.Tensor of shape (H, W), got {type(player_map).__name__}")
        if player_map.dtype.is_floating_point or player_map.dtype.is_complex or player_map.dtype == torch.bool:
            raise TypeError(f"`players` map must be an integer tensor, got dtype {player_map.dtype}")
        if player_map.dim() != 2:
            raise ValueError(f"`players` map must have shape (H, W), got shape {tuple(player_map.shape)}")
        player_map = player_map.detach().to(torch.long).cpu()
        if bool((player_map < -1).any()):
            raise ValueError(f"`players` map ids must be >= -1, got minimum {int(player_map.min())}")
        num_players = int(player_map.max()) + 1
        used = torch.unique(player_map[player_map >= 0])
        if used.numel() != num_players:
            missing = sorted(set(range(num_players)) - set(used.tolist()))[:5]
            raise ValueError(
                f"`players` map ids must be 0..P-1 with every id used; ids {missing} have no bins (P={num_players})"
            )
        if num_players == 0:
            raise ValueError("`players` map has no players (every bin is -1)")
        if require_fixed_dc and int(player_map[0, 0]) != -1:
            raise ValueError(
                f"`players` map must hold -1 at DC [0, 0] (DC is always present, never a player), "
                f"got {int(player_map[0, 0])}"
            )
        h, w = player_map.shape
        if layout == "fft":
            mirrored = player_map.reshape(-1)[mirror_indices(h, w).reshape(-1)].reshape(h, w)
            bad = player_map != mirrored
            if bool(bad.any()):
                u, v = (int(i) for i in bad.nonzero()[0])
                raise ValueError(
                    "`players` map must be conjugate-closed in torch.fft.fft2 layout (bin (u, v) and its mirror "
                    f"(-u, -v) in the same player), got bin ({u}, {v}) in player {int(player_map[u, v])} but its "
                    f"mirror ({(-u) % h}, {(-v) % w}) in player {int(mirrored[u, v])}"
                )
        self._map = player_map
        # gather indices for masks(): always-present bins point at an extra always-True column
        self._full_index = torch.where(player_map >= 0, player_map, num_players)
        self._one_sided_index = self._full_index[:, : w // 2 + 1].contiguous()
        self.layout = layout
        self.name = name
        self.num_players = num_players

    # ------------------------------------------------------------------ basics
    @property
    def player_map(self) -> torch.Tensor:
        """Integer map (H, W) in this object's layout (a copy; the object is immutable)."""
        return self._map.clone()

    @property
    def shape(self) -> Tuple[int, int]:
        return int(self._map.shape[0]), int(self._map.shape[1])

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    def sizes(self) -> torch.Tensor:
        """Number of bins of every player, shape (P,)."""
        return torch.bincount(self._map[self._map >= 0], minlength=self.num_players)

    def fixed_bins(self) -> torch.Tensor:
        """Boolean map (H, W) of the always-present bins."""
        return self._map < 0

    def __repr__(self) -> str:
        return (f"Players(name={self.name!r}, layout={self.layout!r}, shape={self.shape}, "
                f"num_players={self.num_players})")

    def __eq__(self, other) -> bool:
        return isinstance(other, Players) and self.layout == other.layout and torch.equal(self._map, other._map)

    def __hash__(self):
        return hash((self.layout, self.shape, self.num_players))

    def check_shape(self, height: int, width: int, name: str = "inputs") -> None:
        if (height, width) != self.shape:
            raise ValueError(
                f"players partition {self.name!r} is for {self.shape[0]}x{self.shape[1]} spectra, "
                f"but `{name}` images are {height}x{width}"
            )

    # ------------------------------------------------------------------ maps
    def masks(self, coalitions: torch.Tensor, *, one_sided: bool = False) -> torch.Tensor:
        """Bin masks of coalitions.

        Args:
            coalitions: bool or 0/1 tensor (..., P); True where the player is present.
            one_sided: return only the ``rfft2`` half (..., H, W//2+1) of the masks, which is
                all a conjugate-closed partition needs (fft layout only).

        Returns:
            bool tensor (..., H, W): True for bins of present players and always-present bins.
        """
        if coalitions.shape[-1] != self.num_players:
            raise ValueError(
                f"`coalitions` must have {self.num_players} entries in its last dimension (one per player), "
                f"got shape {tuple(coalitions.shape)}"
            )
        coalitions = coalitions.to(torch.bool)
        padded = torch.cat([coalitions, coalitions.new_ones(*coalitions.shape[:-1], 1)], dim=-1)
        index = self._one_sided_index if one_sided else self._full_index
        return padded[..., index.to(coalitions.device)]

    def expand(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Spread per-player values (..., P) onto the bins (..., H, W) (Captum's feature-mask convention).

        Always-present bins get ``fill``.

        Example:
            >>> players = conjugate_pair_players(4, 4)
            >>> players.expand(torch.arange(9.0))[0]  # DC (always present) gets the fill 0
            tensor([0., 0., 1., 0.])
        """
        if values.shape[-1] != self.num_players:
            raise ValueError(
                f"`values` must have {self.num_players} entries in its last dimension, got shape {tuple(values.shape)}"
            )
        padded = torch.cat([values, values.new_full((*values.shape[:-1], 1), fill)], dim=-1)
        index = torch.where(self._map >= 0, self._map, self.num_players).to(values.device)
        return padded[..., index]

    def reduce(self, bin_values: torch.Tensor) -> torch.Tensor:
        """Sum bin values (..., H, W) per player -> (..., P); always-present bins are dropped.

        Example:
            >>> conjugate_pair_players(4, 4).reduce(torch.ones(4, 4))  # bins per player
            tensor([2., 1., 2., 2., 2., 2., 1., 2., 1.])
        """
        h, w = self.shape
        if tuple(bin_values.shape[-2:]) != (h, w):
            raise ValueError(f"`bin_values` must end in ({h}, {w}), got shape {tuple(bin_values.shape)}")
        flat = bin_values.reshape(*bin_values.shape[:-2], h * w)
        keep = (self._map.reshape(-1) >= 0).to(flat.device)
        ids = self._map.reshape(-1)[keep.cpu()].to(flat.device)
        out = flat.new_zeros(*flat.shape[:-1], self.num_players)
        return out.index_add_(-1, ids, flat[..., keep])


# ---------------------------------------------------------------------- constructors
def _relabel(keys: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """Map arbitrary integer keys (H, W) to ids 0..P-1 in increasing key order; fixed bins -> -1."""
    out = torch.full_like(keys, -1)
    unique, inverse = torch.unique(keys[~fixed], return_inverse=True)
    out[~fixed] = inverse
    return out


def _dc_fixed(height: int, width: int, include_dc: bool) -> torch.Tensor:
    fixed = torch.zeros(height, width, dtype=torch.bool)
    fixed[0, 0] = not include_dc
    return fixed


def conjugate_pair_players(height: int, width: int, *, include_dc: bool = False) -> Players:
    """One player per conjugate pair {(u, v), (-u, -v)} (self-mirrored bins stand alone).

    Chen2022 eq. 6 makes every bin a player; pairing mirrors keeps coalition images real.
    DC is always present (-1) unless ``include_dc``.

    Example:
        >>> players = conjugate_pair_players(4, 4)
        >>> players.num_players  # 15 bins besides DC; 3 are their own mirror, 12 form 6 pairs
        9
        >>> players.player_map
        tensor([[-1,  0,  1,  0],
                [ 2,  3,  4,  5],
                [ 6,  7,  8,  7],
                [ 2,  5,  4,  3]])
    """
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    flat = torch.arange(height * width).reshape(height, width)
    canonical = torch.minimum(flat, mirror_indices(height, width))
    return Players(_relabel(canonical, _dc_fixed(height, width, include_dc)), name="pairs")


def patch_grid_players(height: int, width: int, grid: Union[int, Tuple[int, int]], *,
                       include_dc: bool = False) -> Players:
    """A g x g grid of square patches on the centered spectrum, symmetrized.

    The authors' code of Chen2022 cuts the centered 32x32 spectrum into 16x16 patches
    (2x2 bins each) and takes ``.real`` of the non-symmetric coalitions. Here a bin
    belongs to the patch of whichever of {bin, mirror} comes first in the centered
    raster order, so every player is one patch joined with its mirror image
    (about g*g/2 players) and coalitions stay real.
    """
    grid_h, grid_w = (grid, grid) if isinstance(grid, int) else tuple(grid)
    check_positive_int(grid_h, "players (grid size)")
    check_positive_int(grid_w, "players (grid size)")
    if grid_h > height or grid_w > width:
        raise ValueError(f"patch grid {grid_h}x{grid_w} is finer than the {height}x{width} spectrum")
    fy, fx = frequency_indices(height, width)
    iy, ix = fy + height // 2, fx + width // 2  # centered-layout coordinates
    centered_flat = iy * width + ix
    mirror = mirror_indices(height, width)
    mirror_centered = centered_flat.reshape(-1)[mirror.reshape(-1)].reshape(height, width)
    use_self = centered_flat <= mirror_centered
    cy = torch.where(use_self, iy, iy.reshape(-1)[mirror.reshape(-1)].reshape(height, width))
    cx = torch.where(use_self, ix, ix.reshape(-1)[mirror.reshape(-1)].reshape(height, width))
    patch = (cy * grid_h // height) * grid_w + (cx * grid_w // width)
    return Players(_relabel(patch, _dc_fixed(height, width, include_dc)), name=f"patch_grid_{grid_h}x{grid_w}")


def radial_band_players(height: int, width: int, num_bands: int = 8, *, metric: str = "linf",
                        include_dc: bool = False) -> Players:
    """M equal-width rings of the centered spectrum from DC outward (I-ASIDE, Luo2024 §3.1).

    Band k holds the bins with normalized radius r / r_max in [k/M, (k+1)/M) (the outermost
    band also takes r = r_max); ``metric`` is ``"linf"`` (the paper's choice) or ``"l2"``.
    """
    check_positive_int(num_bands, "num_bands")
    radius = frequency_radius(height, width, metric=metric, normalized=True)
    band = torch.clamp((radius * num_bands).floor().long(), max=num_bands - 1)
    fixed = _dc_fixed(height, width, include_dc)
    used = torch.unique(band[~fixed])
    if used.numel() != num_bands:
        raise ValueError(
            f"`num_bands`={num_bands} is too many for a {height}x{width} spectrum in the {metric} metric: "
            f"only {used.numel()} non-empty rings"
        )
    return Players(torch.where(fixed, -1, band), name=f"radial_{metric}_{num_bands}")


def dct_band_groups(height: int, width: int, *, kind: str = "ring") -> Players:
    """Groups of "the same frequency" of the DCT spectrum, lowest first (Wang2020a).

    ``kind="ring"``: group k = {(u, v): max(u, v) = k} (the authors' code);
    ``kind="diagonal"``: group k = {(u, v): u + v = k}. Every coefficient, DC included,
    belongs to a group.
    """
    check_choice(kind, "kind", ("ring", "diagonal"))
    u = torch.arange(height)[:, None].expand(height, width)
    v = torch.arange(width)[None, :].expand(height, width)
    groups = torch.maximum(u, v) if kind == "ring" else u + v
    return Players(groups.clone(), layout="dct", name=f"dct_{kind}")


def players_from_map(player_map: torch.Tensor, *, layout: str = "fft", require_fixed_dc: bool = False) -> Players:
    """Validate a user-given integer map (H, W) and wrap it as :class:`Players`."""
    return Players(player_map, layout=layout, name="custom", require_fixed_dc=require_fixed_dc)


def make_players(spec, height: int, width: int, *, require_fixed_dc: bool = True) -> Players:
    """Resolve the ``players`` argument of the attribution classes.

    ``"pairs"`` -> :func:`conjugate_pair_players`; an int g -> :func:`patch_grid_players`;
    ``("bands", M)`` or ``("bands", M, metric)`` -> :func:`radial_band_players`;
    a :class:`Players`; an integer tensor (H, W) in fft2 layout -> :func:`players_from_map`.
    """
    if isinstance(spec, Players):
        players = spec
        if require_fixed_dc and players.layout == "fft" and int(players._map[0, 0]) != -1:
            raise ValueError("`players` must keep DC [0, 0] always present (-1), got a partition where DC is a player")
    elif isinstance(spec, str):
        if spec != "pairs":
            raise ValueError(f"`players` string must be 'pairs', got {spec!r}")
        players = conjugate_pair_players(height, width)
    elif isinstance(spec, int) and not isinstance(spec, bool):
        players = patch_grid_players(height, width, spec)
    elif isinstance(spec, tuple) and len(spec) in (2, 3) and spec[0] == "bands":
        players = radial_band_players(height, width, spec[1], metric=spec[2] if len(spec) == 3 else "linf")
    elif isinstance(spec, torch.Tensor):
        players = players_from_map(spec, require_fixed_dc=require_fixed_dc)
    else:
        raise TypeError(
            "`players` must be 'pairs', an int grid size, ('bands', M[, metric]), a Players object or an "
            f"integer tensor (H, W), got {type(spec).__name__}"
        )
    players.check_shape(height, width)
    return players
