"""Frequency-masked adversarial noise (seed 000, Chen et al. 2022, §4.4, eq. 11-12).

:class:`FrequencyMaskedAttack` wraps any torchattacks attack, runs it, and keeps only chosen
frequency components of its perturbation ``delta = x_adv - x``:

    delta_masked = IDFT(sigma * DFT(delta)),   x_adv' = clamp(x + delta_masked, 0, 1)

with ``sigma`` the low / high radial mask (eq. 12), the positive / negative frequency
components of the image's frequency Shapley values (PFC / NFC, eq. 11), or any user mask.
:func:`masked_noise_table` measures seed 000 Fig. 6 for one attack.
"""

from __future__ import annotations

from .._model import preserved_model_state
from typing import Any, Callable, Dict, Optional, Union

import torch
from torchattacks.attack import Attack

from .._validation import check_choice, check_images, check_labels, check_number, check_positive_int
from ..spectral import apply_spectral_mask, is_conjugate_symmetric, radial_mask
from .hf_attack import _RestoresModes

__all__ = ["FrequencyMaskedAttack", "frequency_mask", "masked_noise_table", "MASKS"]

#: Named masks. "low"/"high": seed 000 eq. 12; "positive"/"negative": eq. 11 (PFC / NFC).
MASKS = ("low", "high", "positive", "negative")

#: seed 000 §4.4: epsilon_low = 0.4, epsilon_high = 0.6 (fractions of r_max).
LOW_THRESHOLD = 0.4
HIGH_THRESHOLD = 0.6

MaskSpec = Union[str, torch.Tensor, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def frequency_mask(height: int, width: int, kind: str, *, low_threshold: float = LOW_THRESHOLD,
                   high_threshold: float = HIGH_THRESHOLD, metric: str = "l2", device=None) -> torch.Tensor:
    """Radial mask of seed 000 eq. 12, (H, W) bool in ``torch.fft.fft2`` layout.

    ``"low"``: ``r(u, v) < low_threshold * r_max``; ``"high"``: ``r(u, v) > high_threshold * r_max``,
    with ``r`` the distance of the bin from DC (``metric``) and ``r_max`` the largest one of the grid
    (``radial_mask(..., normalized=True)``). Conjugate-symmetric, so masked perturbations are real.
    """
    check_choice(kind, "mask", ("low", "high"))
    if kind == "low":
        check_number(low_threshold, "low_threshold", minimum=0.0, maximum=1.0)
        return radial_mask(height, width, low_threshold, metric=metric, normalized=True, keep="below", device=device)
    check_number(high_threshold, "high_threshold", minimum=0.0, maximum=1.0)
    return radial_mask(height, width, high_threshold, metric=metric, normalized=True, keep="above", device=device)


class FrequencyMaskedAttack(_RestoresModes):
    r"""Wrap a torchattacks attack and keep only chosen frequencies of its perturbation (seed 000 eq. 11-12).

    ``delta = attack(x, y) - x``; ``delta_masked = IDFT(sigma * DFT(delta))`` per channel (computed with
    :func:`freqplug.spectral.apply_spectral_mask`, real by construction); output
    ``clamp(x + delta_masked, 0, 1)``.

    The wrapped attack is stored as ``self.base_attack``, so torchattacks' wrapper methods
    (``set_mode_targeted_*``, ``set_normalization_used``, ``set_model_training_mode``, ``set_device``,
    ``set_model``) set it too, as in ``torchattacks.MultiAttack``. At construction the wrapper adopts
    the wrapped attack's current mode, normalization and training settings.

    Arguments:
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
            probability of the true label, ``softmax(get_logits(x))[y]`` (seed 000 eq. 7, as its code).
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

    After every call, :attr:`last_mask` holds the (N, H, W) mask used and :attr:`last_perturbation`
    the masked perturbation before clamping (clamping to [0, 1] can add frequencies back where it binds).

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
        # Adopt the wrapped attack's settings (Attack.__init__ reset ours to defaults).
        self.device = attack.device
        self.attack_mode = attack.attack_mode
        self.targeted = attack.targeted
        self._target_map_function = attack._target_map_function
        if hasattr(attack, "_kth_min"):
            self._kth_min = attack._kth_min
        self.normalization_used = attack.normalization_used
        self._normalization_applied = attack._normalization_applied
        self._model_training = attack._model_training
        self._batchnorm_training = attack._batchnorm_training
        self._dropout_training = attack._dropout_training
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
                mask = frequency_mask(height, width, spec, low_threshold=self.low_threshold,
                                      high_threshold=self.high_threshold, metric=self.metric, device=images.device)
            else:
                phi = self._shapley_values(images, labels)
                mask = phi > 0 if spec == "positive" else phi < 0
        else:
            mask = spec(images, labels) if callable(spec) else spec
            mask = _check_user_mask(mask, n, height, width)
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
        # The game of seed 000 eq. 7 as its code plays it: softmax output, target picked by Captum.
        return torch.softmax(self.get_logits(images.to(self._model_dtype(images.dtype))), dim=1)

    def forward(self, images, labels):
        r"""
        Overridden.
        """
        check_images(images, "images")
        if labels is None:
            raise ValueError("`labels` must be given (class indices (N,))")
        check_labels(labels, "labels", images.shape[0])
        out_device, out_dtype = images.device, images.dtype
        x = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        mask = self.get_mask(x, labels)
        # The wrapped attack feeds the model directly: give it the model's dtype.
        model_dtype = self._model_dtype(x.dtype)
        adv = self.base_attack(x.to(model_dtype), labels).detach().to(device=x.device, dtype=x.dtype)
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


def _check_user_mask(mask, n: int, height: int, width: int) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"`mask` callable must return a tensor, got {type(mask).__name__}")
    if mask.dim() not in (2, 3) or tuple(mask.shape[-2:]) != (height, width) or (mask.dim() == 3 and mask.shape[0] != n):
        raise ValueError(f"`mask` must have shape ({height}, {width}) or ({n}, {height}, {width}), "
                         f"got {tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        if not mask.dtype.is_floating_point:
            raise TypeError(f"`mask` must be bool or float in [0, 1], got dtype {mask.dtype}")
        if bool(((mask < 0) | (mask > 1)).any()):
            raise ValueError("`mask` float values must lie in [0, 1]")
    if not is_conjugate_symmetric(mask):
        raise ValueError("`mask` must be conjugate-symmetric in torch.fft.fft2 layout (mask[u, v] == mask[-u, -v]) "
                         "so that the masked perturbation is real")
    return mask


def masked_noise_table(model, attack: Attack, x: torch.Tensor, y: torch.Tensor, *,
                       masks=("low", "high", "positive", "negative"), shapley: Optional[Union[Any, Dict]] = None,
                       shapley_kwargs: Optional[Dict[str, Any]] = None,
                       low_threshold: float = LOW_THRESHOLD, high_threshold: float = HIGH_THRESHOLD,
                       project: bool = False, batch_size: int = 256) -> Dict[str, float]:
    """Error rates of ``model`` under masked adversarial noise: seed 000 Fig. 6.

    Runs ``attack`` once, then evaluates ``x``, ``x + delta`` and ``clamp(x + delta_masked, 0, 1)``
    for every mask (the same delta for all, as in the paper).

    Args:
        model: the classifier (inputs in [0, 1]).
        attack: a torchattacks attack on ``model`` (untargeted: error = prediction != y).
        x, y: images (N, C, H, W) in [0, 1] and labels (N,).
        masks: which masked noises to measure, among "low", "high", "positive", "negative".
        shapley, shapley_kwargs: passed to :class:`FrequencyMaskedAttack` for the PFC/NFC masks.
        batch_size: images per forward call of the evaluation.

    Returns:
        ``{"x": e, "x+delta": e, "x+delta_low": e, "x+delta_high": e, "x+delta_PFC": e, "x+delta_NFC": e}``,
        error rates in [0, 1] (only the requested masks).
    """
    check_images(x, "x")
    check_labels(y, "y", x.shape[0])
    check_positive_int(batch_size, "batch_size")
    names = {"low": "x+delta_low", "high": "x+delta_high", "positive": "x+delta_PFC", "negative": "x+delta_NFC"}
    for kind in masks:
        check_choice(kind, "masks", tuple(names))
    with preserved_model_state(model):
        adv = attack(x, y).detach()
        delta = adv - x
        table = {"x": _error_rate(model, x, y, batch_size), "x+delta": _error_rate(model, adv, y, batch_size)}
        phi = None  # Shapley values computed once for both PFC and NFC
        for kind in masks:
            masked = FrequencyMaskedAttack(attack, kind, low_threshold=low_threshold, high_threshold=high_threshold,
                                           shapley=shapley, shapley_kwargs=shapley_kwargs, project=project)
            if kind in ("positive", "negative"):
                phi = masked._shapley_values(x, y) if phi is None else phi
                mask = phi > 0 if kind == "positive" else phi < 0
            else:
                mask = masked.get_mask(x, y)
            delta_masked = apply_spectral_mask(delta, mask, check_symmetry=False)
            if project:
                delta_masked = delta_masked.clamp(-masked.eps, masked.eps)
            table[names[kind]] = _error_rate(model, (x + delta_masked).clamp(0, 1), y, batch_size)
    return table


def _error_rate(model, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    model.eval()
    wrong = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start:start + batch_size])
            wrong += int((logits.argmax(dim=1) != labels[start:start + batch_size].to(logits.device)).sum())
    return wrong / images.shape[0]
