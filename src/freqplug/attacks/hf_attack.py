"""High Frequency (HF) attack (seed 002, Wang et al. 2020, §3.4) as a torchattacks attack.

The attack removes high frequencies: for every image it scans radii from the largest down
and returns the first (largest-radius, least-distorted) low-frequency component
``LFC(x, r) = low_high_split(x, r)[0]`` that the model gets wrong. It needs predictions
only (no gradients), and evaluates many (image, radius) candidates per forward call.
"""

from __future__ import annotations

from .._model import preserved_model_state
import math
from typing import List, Optional

import torch
from torchattacks.attack import Attack
from tqdm.auto import tqdm

from .._validation import check_images, check_labels, check_number, check_positive_int
from ..spectral import apply_spectral_mask, frequency_radius, radial_mask

__all__ = ["HFAttack"]


class _RestoresModes(Attack):
    """Attack whose ``__call__`` restores every module's train/eval flag afterwards.

    torchattacks' ``_recover_model_mode`` only calls ``model.train()`` when the model was in
    training mode; a model in eval mode attacked with ``set_model_training_mode(True)`` would
    stay in training mode, and per-module flags (e.g. a frozen BatchNorm) would be lost.
    """

    def __call__(self, inputs, labels=None, *args, **kwargs):
        with preserved_model_state(self.model):
            return super().__call__(inputs, labels, *args, **kwargs)

    def _model_dtype(self, fallback: torch.dtype) -> torch.dtype:
        for parameter in self.model.parameters():
            if parameter.dtype.is_floating_point:
                return parameter.dtype
        return fallback


class HFAttack(_RestoresModes):
    r"""High Frequency attack (seed 002 §3.4): the largest-radius low-pass image the model gets wrong.

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
    same bins as the previous radius are skipped (they would give the same image).

    Batching: candidates of many images and radii go through the model together, at most
    ``batch_size`` per forward call. Each round gives every still-unsolved image its next
    ``max(1, batch_size // n_unsolved)`` radii, so wall time is a few forward calls; the price
    is that an image may be evaluated at a few radii beyond (smaller than) its first success
    within the round. Those evaluations are counted in :attr:`num_evaluations`.

    After every call: :attr:`found_radius` (N,) float64, the radius of the returned image (NaN
    when the attack failed); :attr:`success` (N,) bool; :attr:`num_evaluations` (N,) long, the
    model evaluations spent on each image by the scan; :attr:`num_forward_calls`, forward
    calls of the scan; :attr:`radii`, the radii scanned.

    Arguments:
        model (nn.Module): model to attack (inputs in [0, 1] unless ``set_normalization_used``).
        min_radius (float): smallest radius tried, in bins. Default ``min(H, W) / 4`` (8 for 32x32).
        step (float): decrement of the radius between candidates, in bins, > 0. (Default: 1)
        start_radius (float): largest radius tried. Default: the largest bin radius of the grid
            (``sqrt((H/2)^2 + (W/2)^2)`` for even sizes), whose candidate drops only the corner bins.
        batch_size (int): candidates per forward call. (Default: 256)
        show_progress (bool): tqdm progress bar over images. (Default: False)

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1].
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

    # ----------------------------------------------------------------------------- scan
    def candidate_radii(self, height: int, width: int) -> List[float]:
        """Radii scanned for (H, W) images, descending, with duplicate masks removed."""
        max_radius = float(frequency_radius(height, width).max())
        start = max_radius if self.start_radius is None else min(float(self.start_radius), max_radius)
        stop = min(height, width) / 4 if self.min_radius is None else float(self.min_radius)
        if start < stop:
            raise ValueError(
                f"`min_radius` ({stop}) is larger than the largest radius of a {height}x{width} grid "
                f"({max_radius:.3f}): there is nothing to scan")
        radius_map = frequency_radius(height, width)
        radii, previous_kept = [], None
        num_steps = int(math.floor((start - stop) / self.step + 1e-9))
        for k in range(num_steps + 1):
            radius = start - k * self.step
            kept = int((radius_map < radius).sum())
            if kept != previous_kept:  # masks are nested: same count == same mask
                radii.append(radius)
                previous_kept = kept
        return radii

    def forward(self, images, labels):
        r"""
        Overridden.
        """
        check_images(images, "images")
        if labels is None:
            raise ValueError("`labels` must be given (class indices (N,), or target classes in "
                             "set_mode_targeted_by_label)")
        check_labels(labels, "labels", images.shape[0])
        out_device, out_dtype = images.device, images.dtype
        x = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        target_labels = self.get_target_label(x, labels) if self.targeted else None

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
