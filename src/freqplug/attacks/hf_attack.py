"""High Frequency (HF) attack (Wang2020b, §3.4) as a torchattacks attack.

The attack removes high frequencies: for every image it scans radii from the largest down
and returns the first (largest-radius, least-distorted) low-frequency component
``LFC(x, r) = low_high_split(x, r)[0]`` that the model gets wrong. It needs predictions
only (no gradients), and evaluates many (image, radius) candidates per forward call.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch
from tqdm.auto import tqdm

from .._validation import check_number, check_positive_int
from ..spectral import apply_spectral_mask, frequency_radius, radial_mask
from ._base import FrequencyAttack

__all__ = ["HFAttack"]


class HFAttack(FrequencyAttack):
    r"""High Frequency attack (Wang2020b §3.4): the largest-radius low-pass image the model gets wrong.

    For every image ``x`` and candidate radius ``r`` (descending), the candidate is
    ``clamp(LFC(x, r), 0, 1)`` with ``LFC(x, r) = low_high_split(x, r)[0]``: the bins of the
    centered spectrum at Euclidean distance ``< r`` (in bins) from DC are kept, every channel
    alike. The attack returns the first candidate that is misclassified (untargeted) or
    classified as the target (targeted modes), and stops before the radius falls below
    ``min_radius`` (the image would lose what a human uses to recognize it); images with no
    successful candidate are returned unchanged.

    Radii: ``start_radius, start_radius - step, ...`` down to ``min_radius`` (inclusive). The
    paper scans integer pseudo-indices (i, j) with an integer step; here the scan is over the
    Euclidean radius itself, in bins, with any positive ``step``. Radii whose mask keeps the
    same bins as the previous radius are skipped (they would give the same image), so at most
    one radius per distinct bin radius of the grid is scanned (about 150 on 32x32): any ``step``,
    however small, costs at most that many candidates per image, and the list is computed from
    the distinct radii, not by walking every step.

    Batching: candidates of many images and radii go through the model together, at most
    ``batch_size`` per forward call. Each round gives every still-unsolved image its next
    ``max(1, batch_size // n_unsolved)`` radii, so wall time is a few forward calls; the price
    is that an image may be evaluated at a few radii beyond (smaller than) its first success
    within the round. Those evaluations are counted in :attr:`num_evaluations`.

    Checks: every call first forwards the clean images (``ceil(N / batch_size)`` forward calls)
    and refuses non-finite logits and labels (or targets) outside the model's output width K;
    targets made by ``set_mode_targeted_random`` / ``_least_likely`` / ``_by_function`` are
    checked against K too.

    Cost of one call, in model evaluations (images forwarded): ``N`` for the clean forward, plus
    ``N`` for the targets in ``set_mode_targeted_random`` / ``_least_likely`` (torchattacks' own
    forward), plus the scan, at most ``N * len(candidate_radii(H, W))``.

    After every call: :attr:`found_radius` (N,) float64, the radius of the returned image (NaN
    when the attack failed); :attr:`success` (N,) bool; :attr:`num_evaluations` (N,) long, the
    model evaluations spent on each image by the scan; :attr:`num_forward_calls`, forward
    calls of the scan; :attr:`radii`, the radii scanned; :attr:`clean_predictions` and
    :attr:`clean_correct` (N,), the model on the clean images; :attr:`success_rate`, the
    success rate over the images the model classified correctly (as robust accuracy counts
    them; Wang2020b reports the attack on correctly classified images), with their number
    :attr:`num_counted`. ``success.float().mean()`` instead counts images the model already got
    wrong as successes, which inflates the rate by the clean error.

    Args:
        model (nn.Module): model to attack (inputs in [0, 1] unless ``set_normalization_used``).
        min_radius (float): smallest radius tried, in bins. Default ``min(H, W) / 4`` (8 for 32x32).
        step (float): decrement of the radius between candidates, in bins, > 0. (Default: 1)
        start_radius (float): largest radius tried. Default: the largest bin radius of the grid
            (``sqrt((H/2)^2 + (W/2)^2)`` for even sizes), whose candidate drops only the corner bins.
        batch_size (int): candidates per forward call. (Default: 256)
        show_progress (bool): tqdm progress bar over images. (Default: False)

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1] (normalized images with ``set_normalization_used``).
        - labels: :math:`(N)` class indices (the targets in ``set_mode_targeted_by_label``).
        - output: :math:`(N, C, H, W)` in [0, 1], on the device and dtype of ``images``.

    Examples::
        >>> attack = freqplug.HFAttack(model, min_radius=8, step=1, batch_size=256)
        >>> adv_images = attack(images, labels)
        >>> attack.found_radius, attack.success, attack.num_evaluations
    """

    def __init__(self, model, min_radius: Optional[float] = None, step: float = 1.0,
                 start_radius: Optional[float] = None, batch_size: int = 256, show_progress: bool = False):
        super().__init__("HFAttack", model)
        if min_radius is not None:
            check_number(min_radius, "min_radius", minimum=0.0, strict_minimum=True)
        if start_radius is not None:
            check_number(start_radius, "start_radius", minimum=0.0, strict_minimum=True)
        if min_radius is not None and start_radius is not None and start_radius < min_radius:
            raise ValueError(f"`start_radius` ({start_radius}) must be >= `min_radius` ({min_radius})")
        self.min_radius = min_radius
        self.step = check_number(step, "step", minimum=0.0, strict_minimum=True)
        self.start_radius = start_radius
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.show_progress = bool(show_progress)
        self.supported_mode = ["default", "targeted"]
        # Per-call results; underscored so torchattacks' __repr__ does not print tensors.
        self._found_radius = None
        self._success = None
        self._num_evaluations = None
        self._num_forward_calls = 0
        self._radii = None
        self._targets = None

    # ----------------------------------------------------------------------------- results
    @property
    def found_radius(self) -> Optional[torch.Tensor]:
        """(N,) float64: radius of each returned image; NaN where the attack failed."""
        return self._found_radius

    @property
    def success(self) -> Optional[torch.Tensor]:
        """(N,) bool: True where a candidate fooled the model (or hit the target)."""
        return self._success

    @property
    def num_evaluations(self) -> Optional[torch.Tensor]:
        """(N,) long: model evaluations (candidate images forwarded) per image in the last call."""
        return self._num_evaluations

    @property
    def num_forward_calls(self) -> int:
        """Forward calls of the model made by the scan in the last call."""
        return self._num_forward_calls

    @property
    def radii(self) -> Optional[torch.Tensor]:
        """(K,) float64: the radii scanned in the last call, descending."""
        return self._radii

    @property
    def targets(self) -> Optional[torch.Tensor]:
        """(N,) long (CPU): the target classes of the last call in targeted modes; None otherwise."""
        return self._targets

    @property
    def counted(self) -> Optional[torch.Tensor]:
        """(N,) bool: the images :attr:`success_rate` counts.

        The images the model classified correctly (``clean_correct``); in
        ``set_mode_targeted_by_label``, where the labels are targets, the images whose clean
        prediction is not already the target.
        """
        if self._success is None:
            return None
        if self._clean_correct is not None:
            return self._clean_correct
        return self._clean_predictions != self._targets

    @property
    def num_counted(self) -> Optional[int]:
        """Number of images :attr:`success_rate` counts (see :attr:`counted`)."""
        counted = self.counted
        return None if counted is None else int(counted.sum())

    @property
    def success_rate(self) -> Optional[float]:
        """Success rate of the last call over :attr:`counted` images (correctly classified ones).

        ``success[counted].mean()``; NaN when no image counts (the model got every image wrong),
        None before the first call. Compare models with this rate, reported with :attr:`num_counted`.
        """
        counted = self.counted
        if counted is None:
            return None
        if not bool(counted.any()):
            return float("nan")
        return float(self._success[counted].double().mean())

    # ----------------------------------------------------------------------------- scan
    def candidate_radii(self, height: int, width: int) -> List[float]:
        """Radii scanned for (H, W) images, descending, with duplicate masks removed.

        The scan ``start, start - step, ...`` (down to ``min_radius``) keeps, of every run of radii
        with the same mask, the first (largest). Masks change only at the grid's distinct bin
        radii ``d_0 < d_1 < ...``: every radius in ``(d_j, d_{j+1}]`` keeps the bins of radius
        ``<= d_j``. So the result is, per interval, the largest ``start - k * step`` inside it: one
        vectorized step per distinct radius, whatever ``step`` is.
        """
        radius_map = frequency_radius(height, width)
        max_radius = float(radius_map.max())
        start = max_radius if self.start_radius is None else min(float(self.start_radius), max_radius)
        stop = min(height, width) / 4 if self.min_radius is None else float(self.min_radius)
        if start < stop:
            raise ValueError(
                f"`min_radius` ({stop}) is larger than the largest radius of a {height}x{width} grid "
                f"({max_radius:.3f}): there is nothing to scan")
        step = float(self.step)
        num_steps = int(math.floor((start - stop) / step + 1e-9))
        upper = torch.unique(radius_map)  # ascending, float64
        lower = torch.cat([torch.tensor([-math.inf], dtype=upper.dtype), upper[:-1]])
        # First candidate index k with start - k * step <= upper, corrected for float rounding.
        k = torch.ceil((start - upper) / step).clamp_min(0)
        k = torch.where(start - k * step > upper, k + 1, k)
        k = torch.where((k > 0) & (start - (k - 1) * step <= upper), k - 1, k)
        radii = start - k * step
        valid = (k <= num_steps) & (radii > lower)
        return radii[valid].flip(0).tolist()

    def forward(self, images, labels):
        r"""
        Overridden.
        """
        out_device, out_dtype = images.device, images.dtype
        clean_logits = self._check_call(images, labels, batch_size=self.batch_size)
        x = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        target_labels = None
        if self.targeted:
            with self._targets_checked(self, int(clean_logits.shape[1])):
                target_labels = self.get_target_label(x, labels).to(self.device)
        self._targets = None if target_labels is None else target_labels.detach().cpu()

        n, _, height, width = x.shape
        radii = self.candidate_radii(height, width)
        masks = torch.stack([radial_mask(height, width, r, keep="below", device=x.device) for r in radii])
        num_radii = len(radii)
        model_dtype = self._model_dtype(x.dtype)

        next_radius = torch.zeros(n, dtype=torch.long, device=x.device)
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        found_index = torch.full((n,), -1, dtype=torch.long, device=x.device)
        evaluations = torch.zeros(n, dtype=torch.long, device=x.device)
        adv = x.clone()
        forward_calls = 0
        progress = tqdm(total=n, desc="HFAttack", unit="image", disable=not self.show_progress)
        with torch.no_grad():
            while True:
                pending = torch.nonzero(~success & (next_radius < num_radii)).flatten()
                if pending.numel() == 0:
                    break
                pending = pending[: self.batch_size]
                per_image = max(1, self.batch_size // pending.numel())
                offsets = torch.arange(per_image, device=x.device)
                row_image = pending.repeat_interleave(per_image)
                row_radius = next_radius[row_image] + offsets.repeat(pending.numel())
                valid = row_radius < num_radii
                row_image, row_radius = row_image[valid], row_radius[valid]

                candidates = apply_spectral_mask(x[row_image], masks[row_radius], check_symmetry=False)
                candidates = candidates.clamp(0, 1)
                predictions = self.get_logits(candidates.to(model_dtype)).argmax(dim=1)
                forward_calls += 1
                if self.targeted:
                    hit = predictions == target_labels[row_image]
                else:
                    hit = predictions != labels[row_image]

                evaluations += torch.bincount(row_image, minlength=n)
                # First hit per image = smallest radius index (largest radius) among its hit rows.
                hit_index = torch.where(hit, row_radius, torch.full_like(row_radius, num_radii))
                best = torch.full((n,), num_radii, dtype=torch.long, device=x.device)
                best.scatter_reduce_(0, row_image, hit_index, reduce="amin")
                solved = torch.nonzero(best < num_radii).flatten()
                if solved.numel():
                    rows = torch.nonzero(hit & (row_radius == best[row_image])).flatten()
                    adv[row_image[rows]] = candidates[rows]
                    success[solved] = True
                    found_index[solved] = best[solved]
                next_radius[pending] += per_image
                progress.update(int(solved.numel()) + int(((next_radius[pending] >= num_radii)
                                                           & ~success[pending]).sum()))
        progress.close()

        radii_tensor = torch.tensor(radii, dtype=torch.float64)
        found = torch.full((n,), float("nan"), dtype=torch.float64)
        found[success.cpu()] = radii_tensor[found_index[success].cpu()]
        self._found_radius = found
        self._success = success.cpu()
        self._num_evaluations = evaluations.cpu()
        self._num_forward_calls = forward_calls
        self._radii = radii_tensor
        return adv.detach().to(device=out_device, dtype=out_dtype)
