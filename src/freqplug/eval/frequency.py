"""Frequency-aware robustness evaluation on top of AutoAttack.

Seed 000 (Chen et al. 2022, Sec. 4.4.1) restricts an adversarial perturbation ``delta`` to a
set of frequencies with a mask ``sigma`` in the Fourier domain,

    delta_sigma = F^-1(sigma ⊙ F(delta))                                      (eq. 11, 12)

with ``sigma_LFC(u, v) = 1[r(u, v) < 0.4 r_max]``, ``sigma_HFC(u, v) = 1[r(u, v) > 0.6 r_max]``
(eq. 12) or the positive/negative Shapley components ``sigma_PFC = 1[phi > 0]``,
``sigma_NFC = 1[phi < 0]`` (eq. 11), and measures the model on ``x + delta_sigma``. Here
``delta = x_adv - x`` comes from AutoAttack (:class:`~freqplug.eval.AutoAttackRunner`); masking
reuses :func:`freqplug.spectral.radial_mask` and :func:`freqplug.spectral.apply_spectral_mask`.
PFC/NFC masks come from a Shapley attribution (e.g. ``freqplug.attributions.FrequencyShapley``)
and are passed in through ``masks``.

The spectrum of the AutoAttack perturbations is summarised by the Relative Change in DCT
(RCT, seed 001 eq. 8) and the spectral SNR (seed 004 eq. 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .._validation import check_images, check_labels, check_number, check_positive_int
from ..spectral import apply_spectral_mask, radial_mask, relative_change_dct, spectral_snr
from ..spectral.fourier import is_conjugate_symmetric
from .autoattack_runner import AutoAttackResult, AutoAttackRunner, _model_device, _owned_state_preserved

__all__ = ["FrequencyRobustness", "evaluate_frequency_robustness", "frequency_band_masks", "perturbation_spectrum"]

#: eps_low and eps_high of seed 000 eq. 12 (fractions of r_max).
LOW_THRESHOLD = 0.4
HIGH_THRESHOLD = 0.6

MaskSpec = Union[torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def frequency_band_masks(height: int, width: int, *, low: float = LOW_THRESHOLD, high: float = HIGH_THRESHOLD,
                         metric: str = "l2", device=None) -> Dict[str, torch.Tensor]:
    """Low- and high-frequency masks of seed 000 eq. 12, bool (H, W) in fft2 layout.

    ``"low"``: r(u, v) < low * r_max; ``"high"``: r(u, v) > high * r_max, with r the distance
    from DC (``metric``) and r_max the largest distance of the grid. Conjugate-symmetric.
    """
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    check_number(low, "low", minimum=0.0, maximum=1.0)
    check_number(high, "high", minimum=0.0, maximum=1.0)
    return {
        "low": radial_mask(height, width, low, metric=metric, normalized=True, keep="below", device=device),
        "high": radial_mask(height, width, high, metric=metric, normalized=True, keep="above", device=device),
    }


def perturbation_spectrum(x: torch.Tensor, x_adv: torch.Tensor, *, only_perturbed: bool = True,
                          metric: str = "l2") -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """RCT map and spectral SNR of adversarial perturbations ``x_adv - x``.

    Args:
        x, x_adv: images (N, C, H, W).
        only_perturbed: use only the points with a non-zero perturbation (AutoAttack returns
            ``x_adv == x`` for points it did not break, which would dilute both statistics).
        metric: ring metric of the SNR.

    Returns:
        ``(rct, snr)``: RCT (H, W) averaged over images and channels (seed 001 eq. 8) and
        ``ESD_r(x) / ESD_r(delta)`` (R,) averaged over images (seed 004 eq. 1); ``(None, None)``
        when no point is perturbed.
    """
    check_images(x, "x")
    check_images(x_adv, "x_adv")
    if x_adv.shape != x.shape:
        raise ValueError(f"`x_adv` must have the shape of `x` {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    delta = x_adv - x
    if only_perturbed:
        keep = delta.flatten(1).abs().amax(dim=1) > 0
        x, x_adv, delta = x[keep], x_adv[keep], delta[keep]
    if x.shape[0] == 0:
        return None, None
    return relative_change_dct(x, x_adv), spectral_snr(x, delta, metric=metric, average=True)


@dataclass
class FrequencyRobustness:
    """Result of :func:`evaluate_frequency_robustness`.

    Attributes:
        accuracy: ``{"clean": ..., "full": ..., "low": ..., "high": ..., <mask name>: ...}``,
            accuracy on x, on AutoAttack's x_adv and on ``clip(x + delta_band, 0, 1)`` per band.
        correct: the same keys -> (N,) bool, point classified correctly.
        perturbation_linf: band -> (N,) Linf norm of the masked perturbation (masking can raise
            it above eps; seed 000 does not re-project).
        rct: (H, W) RCT of the AutoAttack perturbations, or None if AutoAttack perturbed nothing.
        snr: (R,) spectral SNR of the AutoAttack perturbations, or None.
        attack_result: the underlying :class:`~freqplug.eval.AutoAttackResult`.
    """

    accuracy: Dict[str, float]
    correct: Dict[str, torch.Tensor]
    perturbation_linf: Dict[str, torch.Tensor]
    rct: Optional[torch.Tensor]
    snr: Optional[torch.Tensor]
    attack_result: AutoAttackResult


def _resolve_mask(name: str, spec: MaskSpec, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mask = spec(x, y) if callable(spec) else spec
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask {name!r} must be a tensor (H, W) or (N, H, W), or a callable returning one; "
                        f"got {type(mask).__name__}")
    n, _, h, w = x.shape
    if mask.dim() not in (2, 3) or tuple(mask.shape[-2:]) != (h, w) or (mask.dim() == 3 and mask.shape[0] != n):
        raise ValueError(f"mask {name!r} must have shape ({h}, {w}) or ({n}, {h}, {w}) in fft2 layout, "
                         f"got {tuple(mask.shape)}")
    if not is_conjugate_symmetric(mask):
        raise ValueError(f"mask {name!r} must be conjugate-symmetric in torch.fft.fft2 layout "
                         "(mask[..., u, v] == mask[..., -u, -v]) so that the masked perturbation is real")
    return mask


def evaluate_frequency_robustness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                                  runner: Optional[AutoAttackRunner] = None,
                                  attack_result: Optional[AutoAttackResult] = None,
                                  masks: Optional[Mapping[str, MaskSpec]] = None, bands: bool = True,
                                  low: float = LOW_THRESHOLD, high: float = HIGH_THRESHOLD, metric: str = "l2",
                                  batch_size: int = 250, **runner_kwargs) -> FrequencyRobustness:
    """Robust accuracy under AutoAttack perturbations restricted to frequency bands (seed 000 eq. 11-12).

    Args:
        model: classifier on images in [0, 1].
        x: images (N, C, H, W) in [0, 1]; y: labels (N,).
        runner: the :class:`AutoAttackRunner` to use; default ``AutoAttackRunner(model, **runner_kwargs)``.
        attack_result: reuse a finished run on these ``x, y`` instead of attacking again.
        masks: extra bands, name -> bool/float mask (H, W) or per image (N, H, W), fft2 layout,
            conjugate-symmetric, or a callable ``(x, y) -> mask``; e.g. PFC/NFC masks
            ``{"pfc": phi > 0, "nfc": phi < 0}`` from per-image Shapley values ``phi`` (N, H, W).
        bands: include the "low" and "high" bands of eq. 12.
        low, high: eps_low and eps_high of eq. 12 (fractions of r_max).
        metric: radius metric of the bands (``"l2"`` or ``"linf"``).
        batch_size: evaluation (and attack) batch size.

    Returns:
        :class:`FrequencyRobustness`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    check_images(x, "x")
    check_labels(y, "y", x.shape[0])
    batch_size = check_positive_int(batch_size, "batch_size")
    if attack_result is None:
        if runner is None:
            runner = AutoAttackRunner(model, **runner_kwargs)
        elif runner_kwargs:
            raise TypeError(f"pass either `runner` or runner arguments, not both (got {sorted(runner_kwargs)})")
        attack_result = runner.run(x, y, batch_size=batch_size)
    elif not isinstance(attack_result, AutoAttackResult):
        raise TypeError(f"`attack_result` must be an AutoAttackResult, got {type(attack_result).__name__}")
    elif attack_result.x_adv.shape != x.shape:
        raise ValueError(f"`attack_result` was computed on inputs of shape {tuple(attack_result.x_adv.shape)}, "
                         f"not {tuple(x.shape)}")

    h, w = x.shape[-2:]
    band_masks: Dict[str, torch.Tensor] = {}
    if bands:
        band_masks.update(frequency_band_masks(h, w, low=low, high=high, metric=metric, device=x.device))
    for name, spec in (masks or {}).items():
        if name in ("clean", "full") or name in band_masks:
            raise ValueError(f"mask name {name!r} is reserved or repeated; choose another")
        band_masks[name] = _resolve_mask(name, spec, x, y)

    delta = attack_result.x_adv.to(x.dtype) - x
    inputs = {"clean": x, "full": attack_result.x_adv.to(x.dtype)}
    linf: Dict[str, torch.Tensor] = {}
    for name, mask in band_masks.items():
        masked = apply_spectral_mask(delta, mask.to(x.device))
        linf[name] = masked.flatten(1).abs().amax(dim=1).cpu()
        inputs[name] = (x + masked).clamp(0.0, 1.0)

    device = _model_device(model)
    correct: Dict[str, torch.Tensor] = {}
    with _owned_state_preserved(model, device), torch.no_grad():
        for name, images in inputs.items():
            predictions = torch.cat([model(images[s:s + batch_size].to(device)).argmax(1).cpu()
                                     for s in range(0, images.shape[0], batch_size)])
            correct[name] = predictions == y.cpu()
    accuracy = {name: flags.double().mean().item() for name, flags in correct.items()}
    rct, snr = perturbation_spectrum(x, attack_result.x_adv.to(x.dtype), metric=metric)
    return FrequencyRobustness(accuracy=accuracy, correct=correct, perturbation_linf=linf, rct=rct, snr=snr,
                               attack_result=attack_result)
