"""Frequency-masked adversarial noise (Chen2022, §4.4, eq. 11-12).

:class:`FrequencyMaskedAttack` wraps any torchattacks attack, runs it, and keeps only chosen
frequency components of its perturbation ``delta = x_adv - x``:

    delta_masked = IDFT(sigma * DFT(delta)),   x_adv' = clamp(x + delta_masked, 0, 1)

with ``sigma`` the low / high radial mask (eq. 12, :func:`freqplug.spectral.band_mask`), the
positive / negative frequency components of the image's frequency Shapley values (PFC / NFC,
eq. 11), or any user mask. :func:`masked_noise_table` measures Chen2022 Fig. 6 for one attack,
through the one masked-perturbation protocol :func:`freqplug.eval.evaluate_masked_perturbations`.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Optional, Union

import torch
from torchattacks.attack import Attack

from .._validation import check_choice, check_number
from ..spectral import apply_spectral_mask
from ..spectral.filters import HIGH_BAND_THRESHOLD, LOW_BAND_THRESHOLD, band_mask
from ..spectral.fourier import check_spectral_mask
from ._base import FrequencyAttack, targets_checked

__all__ = ["FrequencyMaskedAttack", "frequency_mask", "MASKS"]

#: Named masks. "low"/"high": Chen2022 eq. 12; "positive"/"negative": eq. 11 (PFC / NFC).
MASKS = ("low", "high", "positive", "negative")

#: Chen2022 §4.4: epsilon_low = 0.4, epsilon_high = 0.6 (fractions of r_max); freqplug.spectral's constants.
LOW_THRESHOLD = LOW_BAND_THRESHOLD
HIGH_THRESHOLD = HIGH_BAND_THRESHOLD

MaskSpec = Union[str, torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def frequency_mask(height: int, width: int, kind: str, *, low_threshold: float = LOW_THRESHOLD,
                   high_threshold: float = HIGH_THRESHOLD, metric: str = "l2", device=None) -> torch.Tensor:
    """Deprecated alias of :func:`freqplug.spectral.band_mask` (the same mask, (H, W) bool, fft2 layout)."""
    warnings.warn("freqplug.attacks.frequency_mask is deprecated and will be removed in the next release; "
                  "use freqplug.spectral.band_mask (same arguments)", DeprecationWarning, stacklevel=2)
    return band_mask(height, width, kind, low_threshold=low_threshold, high_threshold=high_threshold, metric=metric,
                     device=device)


class FrequencyMaskedAttack(FrequencyAttack):
    r"""Wrap a torchattacks attack and keep only chosen frequencies of its perturbation (Chen2022 eq. 11-12).

    ``delta = attack(x, y) - x``; ``delta_masked = IDFT(sigma * DFT(delta))`` per channel (computed with
    :func:`freqplug.spectral.apply_spectral_mask`, real by construction); output
    ``clamp(x + delta_masked, 0, 1)``.

    The wrapped attack is stored as ``self.base_attack``, so torchattacks' wrapper methods
    (``set_mode_targeted_*``, ``set_normalization_used``, ``set_model_training_mode``, ``set_device``,
    ``set_model``) set it too, as in ``torchattacks.MultiAttack``. At construction the wrapper adopts
    the wrapped attack's current mode, normalization and training settings.

    Args:
        attack (torchattacks.Attack): the attack whose perturbation is masked.
        mask: ``"high"`` (default) / ``"low"`` (eq. 12 with ``high_threshold`` / ``low_threshold`` times
            r_max), ``"positive"`` / ``"negative"`` (bins whose frequency Shapley value for the true label
            is > 0 / < 0, eq. 11; needs :class:`freqplug.attributions.FrequencyShapley`), a bool or float
            tensor (H, W) or (N, H, W) in ``torch.fft.fft2`` layout (conjugate-symmetric), or a callable
            ``(images, labels) -> mask`` of those shapes.
        low_threshold, high_threshold (float): fractions of r_max. (Defaults: 0.4, 0.6, the paper's)
        metric (str): radius of a bin for "low"/"high": ``"l2"`` (default) or ``"linf"``.
        shapley: for "positive"/"negative": a ``FrequencyShapley`` instance (its forward function is
            used as is), or a dict of keyword arguments of ``FrequencyShapley.attribute`` (e.g.
            ``{"players": 16, "n_samples": 10, "seed": 0}``) used with the default game: the softmax
            probability of the true label, ``softmax(get_logits(x))[y]`` (Chen2022 eq. 7, as its code).
            The Shapley values are those of the clean images for the labels given to the call (the
            true labels; in ``set_mode_targeted_by_label`` these are the targets).
            Mind the cost: ``N * (2 + n_samples * (P - 1))`` model evaluations for P players.
        shapley_kwargs (dict): keyword arguments of ``attribute`` used with a ``shapley`` instance (or
            merged into the ``shapley`` dict).
        project (bool): clip ``delta_masked`` back into the L_inf ball of radius ``eps`` (default False).
            Masking can raise the L_inf norm of delta above the attack's eps (removing frequencies
            changes every pixel); the paper does not project, and projecting re-introduces energy
            outside the mask, so the frequency support is then no longer exact.
        eps (float): radius of that ball; default the wrapped attack's ``eps``.

    Checks: every call first forwards the clean images once (N model evaluations) and refuses
    non-finite logits and labels (or targets in ``set_mode_targeted_by_label``) outside the model's
    output width K; targets the wrapped attack makes in ``set_mode_targeted_random`` /
    ``_least_likely`` / ``_by_function`` are checked against K when it makes them. The wrapped
    attack runs with gradients enabled, so the wrapper also works under ``torch.no_grad()``.

    Cost of one call: ``N`` (clean forward) + the wrapped attack's evaluations + for
    "positive"/"negative" the Shapley estimate (see ``shapley``).

    After every call, :attr:`last_mask` holds the (N, H, W) mask used, :attr:`last_perturbation`
    the masked perturbation before clamping (clamping to [0, 1] can add frequencies back where it binds),
    and :attr:`clean_predictions` / :attr:`clean_correct` the model on the clean images.

    Shape:
        - images: :math:`(N, C, H, W)` in [0, 1] (normalized images with ``set_normalization_used``).
        - labels: :math:`(N)` class indices (the targets in ``set_mode_targeted_by_label``).
        - mask: :math:`(H, W)` or :math:`(N, H, W)`, fft2 layout.
        - output: :math:`(N, C, H, W)` in [0, 1], on the device and dtype of ``images``.

    Examples::
        >>> pgd = torchattacks.PGD(model, eps=8/255, alpha=2/255, steps=10)
        >>> attack = freqplug.FrequencyMaskedAttack(pgd, mask="high")
        >>> adv_images = attack(images, labels)
    """

    def __init__(self, attack: Attack, mask: MaskSpec = "high", *, low_threshold: float = LOW_THRESHOLD,
                 high_threshold: float = HIGH_THRESHOLD, metric: str = "l2",
                 shapley: Optional[Union[Any, Dict[str, Any]]] = None,
                 shapley_kwargs: Optional[Dict[str, Any]] = None, project: bool = False,
                 eps: Optional[float] = None):
        if not isinstance(attack, Attack):
            raise TypeError(f"`attack` must be a torchattacks.Attack, got {type(attack).__name__}")
        super().__init__("FrequencyMaskedAttack", attack.model)
        _check_mask_spec(mask)
        check_number(low_threshold, "low_threshold", minimum=0.0, maximum=1.0)
        check_number(high_threshold, "high_threshold", minimum=0.0, maximum=1.0)
        check_choice(metric, "metric", ("l2", "linf"))
        if shapley is not None and not isinstance(shapley, dict) and not hasattr(shapley, "attribute"):
            raise TypeError("`shapley` must be a FrequencyShapley instance or a dict of attribute() keyword "
                            f"arguments, got {type(shapley).__name__}")
        if shapley_kwargs is not None and not isinstance(shapley_kwargs, dict):
            raise TypeError(f"`shapley_kwargs` must be a dict, got {type(shapley_kwargs).__name__}")
        if project:
            eps = getattr(attack, "eps", None) if eps is None else eps
            if eps is None:
                raise ValueError("`project=True` needs `eps` (the wrapped attack has no `eps` attribute)")
        if eps is not None:
            check_number(eps, "eps", minimum=0.0, strict_minimum=True)
        # Registered in self._attacks by Attack.__setattr__, so wrapper methods reach it.
        self.base_attack = attack
        self.mask = mask
        self.low_threshold = float(low_threshold)
        self.high_threshold = float(high_threshold)
        self.metric = metric
        self.shapley = shapley
        self.shapley_kwargs = dict(shapley_kwargs or {})
        self.project = bool(project)
        self.eps = eps
        self.supported_mode = list(attack.supported_mode)
        # Adopt the wrapped attack's settings (Attack.__init__ reset ours to defaults), in whatever
        # state it is: targeted modes, 3-channel normalization, model-mode flags, device.
        self._adopt_settings(attack)
        self._last_mask = None
        self._last_perturbation = None

    @property
    def last_perturbation(self) -> Optional[torch.Tensor]:
        """(N, C, H, W) ``delta_masked`` of the last call, before ``x + delta_masked`` is clamped to [0, 1].

        Its spectrum is zero outside the mask (unless ``project=True``); the returned images can
        differ from ``x + delta_masked`` where the clamp binds, which adds frequencies back.
        """
        return self._last_perturbation

    @property
    def last_mask(self) -> Optional[torch.Tensor]:
        """(N, H, W) mask (bool or float) applied in the last call, fft2 layout."""
        return self._last_mask

    def get_mask(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mask for these images, (N, H, W) in fft2 layout (bool, or float for soft user masks)."""
        n, _, height, width = images.shape
        spec = self.mask
        if isinstance(spec, str):
            if spec in ("low", "high"):
                mask = band_mask(height, width, spec, low_threshold=self.low_threshold,
                                 high_threshold=self.high_threshold, metric=self.metric, device=images.device)
            else:
                phi = self._shapley_values(images, labels)
                mask = phi > 0 if spec == "positive" else phi < 0
        else:
            mask = spec(images, labels) if callable(spec) else spec
            mask = check_spectral_mask(mask, "mask", height, width, batch_size=n)
        mask = mask.to(images.device)
        return mask.expand(n, height, width) if mask.dim() == 2 else mask

    def _shapley_values(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        try:
            from ..attributions import FrequencyShapley
        except ImportError as error:  # pragma: no cover - depends on the installed version
            raise ImportError("the 'positive'/'negative' masks need freqplug.attributions.FrequencyShapley") from error
        if self.shapley is None or isinstance(self.shapley, dict):
            explainer = FrequencyShapley(self._true_class_probability)
            kwargs = {**(self.shapley or {}), **self.shapley_kwargs}
        else:
            explainer, kwargs = self.shapley, dict(self.shapley_kwargs)
        kwargs.pop("target", None)
        phi = explainer.attribute(images, target=labels, **kwargs)
        if isinstance(phi, torch.Tensor):
            return phi
        return phi.attributions  # a FrequencyShapleyResult (return_result=True)

    def _true_class_probability(self, images: torch.Tensor) -> torch.Tensor:
        # The game of Chen2022 eq. 7 as its code plays it: softmax output, target picked by Captum.
        return torch.softmax(self.get_logits(images.to(self._model_dtype(images.dtype))), dim=1)

    def forward(self, images, labels):
        r"""
        Overridden.
        """
        clean_logits = self._check_call(images, labels)
        out_device, out_dtype = images.device, images.dtype
        x = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        mask = self.get_mask(x, labels)
        # The wrapped attack feeds the model directly: give it the model's dtype.
        model_dtype = self._model_dtype(x.dtype)
        # Gradients on: torchattacks' gradient attacks fail under a caller's torch.no_grad().
        with torch.enable_grad(), targets_checked(self.base_attack, int(clean_logits.shape[1])):
            adv = self.base_attack(x.to(model_dtype), labels)
        adv = adv.detach().to(device=x.device, dtype=x.dtype)
        delta_masked = apply_spectral_mask(adv - x, mask, check_symmetry=False)
        if self.project:
            delta_masked = delta_masked.clamp(-self.eps, self.eps)
        self._last_mask = mask
        self._last_perturbation = delta_masked.detach()
        return (x + delta_masked).clamp(0, 1).detach().to(device=out_device, dtype=out_dtype)


def _check_mask_spec(mask) -> None:
    if isinstance(mask, str):
        check_choice(mask, "mask", MASKS)
    elif not (isinstance(mask, torch.Tensor) or callable(mask)):
        raise TypeError(f"`mask` must be one of {list(MASKS)}, a tensor (H, W) / (N, H, W) in fft2 layout, "
                        f"or a callable (images, labels) -> mask, got {type(mask).__name__}")
    elif isinstance(mask, torch.Tensor) and mask.dim() not in (2, 3):
        raise ValueError(f"`mask` tensor must have shape (H, W) or (N, H, W), got {tuple(mask.shape)}")
