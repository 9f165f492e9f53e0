"""The masked-perturbation protocol (Chen2022 §4.4) and the perturbation-spectrum measure.

Chen2022 (Sec. 4.4.1) restricts an adversarial perturbation ``delta = x_adv - x`` to a set of
frequencies with a mask ``sigma`` in the Fourier domain,

    delta_sigma = F^-1(sigma ⊙ F(delta))                                      (eq. 11, 12)

with ``sigma_low(u, v) = 1[r(u, v) < 0.4 r_max]``, ``sigma_high(u, v) = 1[r(u, v) > 0.6 r_max]``
(eq. 12, :func:`freqplug.spectral.band_mask`) or the positive/negative Shapley components
``sigma_PFC = 1[phi > 0]``, ``sigma_NFC = 1[phi < 0]`` (eq. 11), and measures the model on
``clip(x + delta_sigma, 0, 1)``. This module holds that protocol once:

* :func:`evaluate_masked_perturbations`: the protocol for any ``x_adv`` (the one implementation);
* :func:`evaluate_frequency_robustness`: ``x_adv`` from AutoAttack (:class:`~freqplug.eval.AutoAttackRunner`,
  or a finished run checked against the inputs);
* :func:`freqplug.masked_noise_table` (Chen2022 Fig. 6): ``x_adv`` from a torchattacks attack, as
  error rates; a thin caller of :func:`evaluate_masked_perturbations`.

The spectrum of perturbations is summarised by :func:`perturbation_spectrum`: the Relative Change
in DCT (RCT, Wang2020a eq. 8) and the spectral SNR (Luo2024 eq. 1); :func:`freqplug.attack_spectra`
calls it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .._io import digest
from .._model import predict, preserved_model_state
from .._validation import check_callable, check_images, check_labels, check_number, check_positive_int
from ..spectral import apply_spectral_mask, relative_change_dct, spectral_snr
from ..spectral.filters import HIGH_BAND_THRESHOLD, LOW_BAND_THRESHOLD, band_mask
from ..spectral.fourier import check_spectral_mask
from .autoattack_runner import AutoAttackResult, AutoAttackRunner

__all__ = ["FrequencyRobustness", "evaluate_frequency_robustness", "evaluate_masked_perturbations",
           "frequency_band_masks", "perturbation_spectrum"]

#: eps_low and eps_high of Chen2022 eq. 12 (fractions of r_max); the same objects as freqplug.spectral's.
LOW_THRESHOLD = LOW_BAND_THRESHOLD
HIGH_THRESHOLD = HIGH_BAND_THRESHOLD

MaskSpec = Union[torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]

#: Names of the two rows every result has: the clean images and the unmasked adversarial ones.
RESERVED = ("clean", "full")


def frequency_band_masks(height: int, width: int, *, low: float = LOW_THRESHOLD, high: float = HIGH_THRESHOLD,
                         metric: str = "l2", device=None) -> Dict[str, torch.Tensor]:
    """Deprecated: use :func:`freqplug.spectral.band_mask` (same masks).

    ``{"low": band_mask(h, w, "low", low_threshold=low), "high": band_mask(h, w, "high", high_threshold=high)}``.
    """
    warnings.warn("freqplug.eval.frequency_band_masks is deprecated and will be removed in the next release; "
                  "use freqplug.spectral.band_mask(height, width, 'low' | 'high', ...)", DeprecationWarning,
                  stacklevel=2)
    return {
        "low": band_mask(height, width, "low", low_threshold=low, metric=metric, device=device),
        "high": band_mask(height, width, "high", high_threshold=high, metric=metric, device=device),
    }


def perturbation_spectrum(x: torch.Tensor, x_adv: torch.Tensor, *, only_perturbed: bool = True,
                          metric: str = "l2") -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """RCT map and spectral SNR of adversarial perturbations ``x_adv - x``.

    Args:
        x, x_adv: images (N, C, H, W) in [0, 1].
        only_perturbed: use only the points with a non-zero perturbation (AutoAttack returns
            ``x_adv == x`` for points it did not break, which would dilute both statistics).
            ``False`` measures every point (what :func:`freqplug.attack_spectra` reports).
        metric: ring metric of the SNR.

    Returns:
        ``(rct, snr)``: RCT (H, W), ``mean |DCT(x_adv) - DCT(x)| / |DCT(x)|`` over images and channels
        (Wang2020a eq. 8, orthonormal DCT, (0, 0) = DC), and ``ESD_r(x) / ESD_r(delta)`` (R,) per integer
        radius r of the DFT, ESDs averaged over images and channels (Luo2024 eq. 1; inf where delta has no
        energy); ``(None, None)`` when no point is perturbed (``only_perturbed=True``).

    Shape:
        - x, x_adv: :math:`(N, C, H, W)`.
        - rct: :math:`(H, W)`; snr: :math:`(R)`.
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
    """Result of :func:`evaluate_masked_perturbations` / :func:`evaluate_frequency_robustness`.

    Attributes:
        accuracy: ``{"clean": ..., "full": ..., "low": ..., "high": ..., <mask name>: ...}``,
            accuracy on x, on x_adv and on ``clip(x + delta_band, 0, 1)`` per band.
        correct: the same keys -> (N,) bool, point classified correctly.
        perturbation_linf: band -> (N,) Linf norm of the masked perturbation (masking can raise
            it above eps; Chen2022 does not re-project).
        rct: (H, W) RCT of the perturbations, or None if nothing was perturbed.
        snr: (R,) spectral SNR of the perturbations, or None.
        attack_result: the underlying :class:`~freqplug.eval.AutoAttackResult` (None when ``x_adv``
            came from elsewhere).
        x_adv: (N, C, H, W) the unmasked adversarial images the protocol masked.
    """

    accuracy: Dict[str, float]
    correct: Dict[str, torch.Tensor]
    perturbation_linf: Dict[str, torch.Tensor]
    rct: Optional[torch.Tensor]
    snr: Optional[torch.Tensor]
    attack_result: Optional[AutoAttackResult] = None
    x_adv: Optional[torch.Tensor] = None

    def error_rate(self) -> Dict[str, float]:
        """``{name: fraction of points misclassified}``, the same keys as :attr:`accuracy`."""
        return _error_rates(self.correct)


def _error_rates(correct: Mapping[str, torch.Tensor]) -> Dict[str, float]:
    """``{name: fraction of False}`` of per-point correctness flags ``{name: (N,) bool}``."""
    return {name: float((~flags).double().mean()) for name, flags in correct.items()}


def _resolve_mask(name: str, spec: MaskSpec, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mask = spec(x, y) if callable(spec) else spec
    n, _, h, w = x.shape
    return check_spectral_mask(mask, f"masks[{name!r}]", h, w, batch_size=n)


def evaluate_masked_perturbations(model: Callable, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, *,
                                  masks: Optional[Mapping[str, MaskSpec]] = None, bands: bool = True,
                                  low: float = LOW_THRESHOLD, high: float = HIGH_THRESHOLD, metric: str = "l2",
                                  project_eps: Optional[float] = None,
                                  batch_size: int = 250) -> FrequencyRobustness:
    """Accuracy of ``model`` under the perturbation ``x_adv - x`` restricted to frequency bands (Chen2022 eq. 11-12).

    For every band ``sigma``: ``delta_sigma = IDFT(sigma * DFT(x_adv - x))`` per channel (real by
    conjugate symmetry), optionally clipped to ``[-project_eps, project_eps]``, and the model is
    evaluated on ``clip(x + delta_sigma, 0, 1)``. The same ``delta`` serves every band (as in the paper).

    Cost: ``N * (2 + number of bands)`` model evaluations, in chunks of ``batch_size`` images, no
    gradients; every chunk's output is checked (finite, labels in [0, K)).

    Args:
        model: classifier on images in [0, 1] (an ``nn.Module`` or a function); its train/eval flags,
            ``requires_grad`` and ``.grad`` are restored (it runs in eval mode).
        x: clean images (N, C, H, W) in [0, 1]; y: labels (N,).
        x_adv: adversarial images (N, C, H, W) in [0, 1] for these ``x``.
        masks: extra bands, name -> bool/float mask (H, W) or per image (N, H, W), fft2 layout,
            conjugate-symmetric, or a callable ``(x, y) -> mask``; e.g. PFC/NFC masks
            ``{"pfc": phi > 0, "nfc": phi < 0}`` from per-image Shapley values ``phi`` (N, H, W).
        bands: include the "low" and "high" bands of eq. 12 (first, before ``masks``).
        low, high: eps_low and eps_high of eq. 12 (fractions of r_max).
        metric: radius metric of the bands (``"l2"`` or ``"linf"``).
        project_eps: clip every masked perturbation into the Linf ball of this radius (None: no
            projection, as the paper).
        batch_size: images per forward call.

    Returns:
        :class:`FrequencyRobustness` (``attack_result`` None, ``x_adv`` the given images); its
        ``rct``/``snr`` measure the perturbed points only (:func:`perturbation_spectrum`).

    Shape:
        - x, x_adv: :math:`(N, C, H, W)`; y: :math:`(N)`; masks: :math:`(H, W)` or :math:`(N, H, W)`.
    """
    check_callable(model, "model")
    check_images(x, "x")
    check_labels(y, "y", x.shape[0])
    check_images(x_adv, "x_adv")
    if x_adv.shape != x.shape:
        raise ValueError(f"`x_adv` must have the shape of `x` {tuple(x.shape)}, got {tuple(x_adv.shape)}")
    batch_size = check_positive_int(batch_size, "batch_size")
    if project_eps is not None:
        check_number(project_eps, "project_eps", minimum=0.0, strict_minimum=True)
    if masks is not None and not isinstance(masks, Mapping):
        raise TypeError(f"`masks` must be a dict name -> mask, got {type(masks).__name__}")

    h, w = x.shape[-2:]
    band_masks: Dict[str, torch.Tensor] = {}
    if bands:
        band_masks["low"] = band_mask(h, w, "low", low_threshold=low, metric=metric, device=x.device)
        band_masks["high"] = band_mask(h, w, "high", high_threshold=high, metric=metric, device=x.device)
    for name, spec in (masks or {}).items():
        if name in RESERVED or name in band_masks:
            raise ValueError(f"mask name {name!r} is reserved or repeated; choose another "
                             f"(reserved: {list(RESERVED)}{', low, high' if bands else ''})")
        band_masks[name] = _resolve_mask(name, spec, x, y)

    x_adv = x_adv.detach().to(device=x.device, dtype=x.dtype)
    delta = x_adv - x
    inputs = {"clean": x, "full": x_adv}
    linf: Dict[str, torch.Tensor] = {}
    for name, mask in band_masks.items():
        masked = apply_spectral_mask(delta, mask.to(x.device), check_symmetry=False)
        if project_eps is not None:
            masked = masked.clamp(-project_eps, project_eps)
        linf[name] = masked.flatten(1).abs().amax(dim=1).cpu()
        inputs[name] = (x + masked).clamp(0.0, 1.0)

    correct: Dict[str, torch.Tensor] = {}
    labels = y.detach().cpu()
    with preserved_model_state(model, eval_mode=True):
        for name, images in inputs.items():
            # The clean images go first: predict() checks the logits and y against the output width there.
            correct[name] = predict(model, images, batch_size=batch_size, labels=y, labels_name="y") == labels
    accuracy = {name: flags.double().mean().item() for name, flags in correct.items()}
    rct, snr = perturbation_spectrum(x, x_adv, metric=metric)
    return FrequencyRobustness(accuracy=accuracy, correct=correct, perturbation_linf=linf, rct=rct, snr=snr,
                               attack_result=None, x_adv=x_adv)


def _check_attack_result(result, x: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse an AutoAttack result that was not computed on these ``x, y``.

    AutoAttackResult does not store its inputs, so this checks what a result implies about them:
    the shape; ``robust == (y_pred == y)`` (the runner's definition, so it pins ``y``); points no
    attack broke (robust, or misclassified clean) have ``x_adv == x``; broken points lie in the
    threat model's eps-ball around ``x``; and, when the result carries one, the digest of ``(x, y)``
    (``inputs_digest = freqplug._io.digest(x.cpu(), y.cpu())``).
    """
    if not isinstance(result, AutoAttackResult):
        raise TypeError(f"`attack_result` must be an AutoAttackResult, got {type(result).__name__}")
    if tuple(result.x_adv.shape) != tuple(x.shape):
        raise ValueError(f"`attack_result` was computed on inputs of shape {tuple(result.x_adv.shape)}, "
                         f"not on `x` of shape {tuple(x.shape)}")
    stored = getattr(result, "inputs_digest", None)
    if stored is not None and stored != digest(x.detach().cpu(), y.detach().cpu()):
        raise ValueError("`attack_result` was computed on other inputs: its `inputs_digest` does not match "
                         "the digest of `x` and `y`")
    mismatch = ("`attack_result` does not belong to these `x`, `y` ({}); pass the result of a run on exactly "
                "these inputs")
    y_cpu = y.detach().cpu()
    if not torch.equal(result.robust.cpu(), result.y_pred.cpu() == y_cpu):
        bad = int((result.robust.cpu() != (result.y_pred.cpu() == y_cpu)).sum())
        raise ValueError(mismatch.format(f"its robust flags disagree with `y` on {bad} of {y.shape[0]} points"))
    x_cpu = x.detach().cpu().double()
    delta = result.x_adv.detach().cpu().double() - x_cpu
    unbroken = torch.tensor([b is None or b == "clean" for b in result.broken_by], dtype=torch.bool)
    tolerance = 1e-5
    if bool(unbroken.any()):
        moved = delta[unbroken].flatten(1).abs().amax(dim=1)
        if bool((moved > tolerance).any()):
            raise ValueError(mismatch.format(
                f"{int((moved > tolerance).sum())} point(s) no attack broke have x_adv != x "
                f"(largest difference {float(moved.max()):.4g})"))
    broken = ~unbroken & torch.tensor([b != "restored" for b in result.broken_by], dtype=torch.bool)
    if bool(broken.any()):
        order = {"Linf": math.inf, "L2": 2, "L1": 1}.get(result.norm)
        if order is not None:
            norms = torch.linalg.vector_norm(delta[broken].flatten(1), ord=order, dim=1)
            limit = result.eps * (1 + 1e-4) + tolerance
            if bool((norms > limit).any()):
                raise ValueError(mismatch.format(
                    f"{int((norms > limit).sum())} broken point(s) lie outside the {result.norm} ball of radius "
                    f"{result.eps:.4g} around `x` (largest {result.norm} distance {float(norms.max()):.4g})"))


def evaluate_frequency_robustness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                                  runner: Optional[AutoAttackRunner] = None,
                                  attack_result: Optional[AutoAttackResult] = None,
                                  masks: Optional[Mapping[str, MaskSpec]] = None, bands: bool = True,
                                  low: float = LOW_THRESHOLD, high: float = HIGH_THRESHOLD, metric: str = "l2",
                                  batch_size: int = 250, **runner_kwargs) -> FrequencyRobustness:
    """Robust accuracy under AutoAttack perturbations restricted to frequency bands (Chen2022 eq. 11-12).

    :func:`evaluate_masked_perturbations` on AutoAttack's ``x_adv``.

    Cost: the AutoAttack run (unless ``attack_result`` is given; see :class:`AutoAttackRunner`), then
    ``N * (2 + number of bands)`` model evaluations.

    Args:
        model: classifier on images in [0, 1].
        x: images (N, C, H, W) in [0, 1]; y: labels (N,).
        runner: the :class:`AutoAttackRunner` to use; default ``AutoAttackRunner(model, **runner_kwargs)``.
        attack_result: reuse a finished run on exactly these ``x, y`` instead of attacking again. It is
            checked against them (shape, labels, unbroken points equal to ``x``, broken points inside the
            eps-ball, and the stored digest of the inputs when the result has one); a result of other
            inputs raises ``ValueError``.
        masks: extra bands, name -> bool/float mask (H, W) or per image (N, H, W), fft2 layout,
            conjugate-symmetric, or a callable ``(x, y) -> mask``; e.g. PFC/NFC masks
            ``{"pfc": phi > 0, "nfc": phi < 0}`` from per-image Shapley values ``phi`` (N, H, W).
        bands: include the "low" and "high" bands of eq. 12.
        low, high: eps_low and eps_high of eq. 12 (fractions of r_max).
        metric: radius metric of the bands (``"l2"`` or ``"linf"``).
        batch_size: evaluation (and attack) batch size.

    Returns:
        :class:`FrequencyRobustness` with ``attack_result`` set.
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
    else:
        if runner is not None or runner_kwargs:
            raise TypeError("pass either `attack_result` or `runner`/runner arguments, not both")
        _check_attack_result(attack_result, x, y)
    result = evaluate_masked_perturbations(model, x, y, attack_result.x_adv, masks=masks, bands=bands, low=low,
                                           high=high, metric=metric, batch_size=batch_size)
    result.attack_result = attack_result
    return result
