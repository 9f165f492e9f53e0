"""Chen2022 Fig. 6: error rates under adversarial noise restricted to frequency bands or to the
positive/negative frequency-Shapley components (the error-rate view of the one masked-perturbation
protocol, :func:`freqplug.eval.evaluate_masked_perturbations`)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

import torch
from torchattacks.attack import Attack

from .._model import num_classes_of, preserved_model_state
from .._validation import check_choice, check_images, check_labels, check_positive_int
from ..attacks._base import targets_checked
from ..attacks.frequency_masked import HIGH_THRESHOLD, LOW_THRESHOLD, FrequencyMaskedAttack
from ..spectral import band_mask
from .frequency import _error_rates, evaluate_masked_perturbations

__all__ = ["masked_noise_table"]


def masked_noise_table(model, attack: Attack, x: torch.Tensor, y: torch.Tensor, *,
                       masks=("low", "high", "positive", "negative"), shapley: Optional[Union[Any, Dict]] = None,
                       shapley_kwargs: Optional[Dict[str, Any]] = None,
                       low_threshold: float = LOW_THRESHOLD, high_threshold: float = HIGH_THRESHOLD,
                       project: bool = False, batch_size: int = 256) -> Dict[str, float]:
    """Error rates of ``model`` under masked adversarial noise: Chen2022 Fig. 6.

    Runs ``attack`` once, then evaluates ``x``, ``x + delta`` and ``clamp(x + delta_masked, 0, 1)``
    for every mask (the same delta for all, as in the paper), through the one masked-perturbation
    protocol :func:`freqplug.eval.evaluate_masked_perturbations` (this is its error-rate view).

    Checks before the attack runs: ``x``, ``y``, and one forward of ``x[:1]`` (finite logits, ``y``
    inside the model's output width); targets the attack's targeted mode makes are checked too.
    Works under ``torch.no_grad()`` (the attack runs with gradients enabled).

    Cost: 1 + the attack's evaluations + ``N * (2 + len(masks))`` model evaluations, plus the
    Shapley estimate for "positive"/"negative" (``N * (2 + n_samples * (P - 1))`` for P players).

    Args:
        model: the classifier (inputs in [0, 1]); its state is restored.
        attack: a torchattacks attack on ``model`` (untargeted: error = prediction != y).
        x, y: images (N, C, H, W) in [0, 1] and labels (N,).
        masks: which masked noises to measure, among "low", "high", "positive", "negative".
        shapley, shapley_kwargs: passed to :class:`FrequencyMaskedAttack` for the PFC/NFC masks.
        low_threshold, high_threshold: eps_low, eps_high of eq. 12.
        project: clip every masked perturbation into the attack's Linf ``eps`` ball.
        batch_size: images per forward call of the evaluation.

    Returns:
        ``{"x": e, "x+delta": e, "x+delta_low": e, "x+delta_high": e, "x+delta_PFC": e, "x+delta_NFC": e}``,
        error rates in [0, 1] (only the requested masks, in the order given).
    """
    correct = _masked_noise_correct(model, attack, x, y, masks=masks, shapley=shapley, shapley_kwargs=shapley_kwargs,
                                    low_threshold=low_threshold, high_threshold=high_threshold, project=project,
                                    batch_size=batch_size)
    return _error_rates(correct)


def _masked_noise_correct(model, attack: Attack, x: torch.Tensor, y: torch.Tensor, *,
                          masks=("low", "high", "positive", "negative"), shapley=None, shapley_kwargs=None,
                          low_threshold: float = LOW_THRESHOLD, high_threshold: float = HIGH_THRESHOLD,
                          project: bool = False, batch_size: int = 256) -> Dict[str, torch.Tensor]:
    """:func:`masked_noise_table` per image: ``{row name: (N,) bool, classified correctly}`` on CPU, same keys.

    The report's sharded stage calls it per unit of images and takes the error rates of the concatenated flags.
    """
    if not isinstance(attack, Attack):
        raise TypeError(f"`attack` must be a torchattacks.Attack, got {type(attack).__name__}")
    check_images(x, "x")
    check_labels(y, "y", x.shape[0])
    batch_size = check_positive_int(batch_size, "batch_size")
    names = {"low": "x+delta_low", "high": "x+delta_high", "positive": "x+delta_PFC", "negative": "x+delta_NFC"}
    if isinstance(masks, str):
        masks = (masks,)
    for kind in masks:
        check_choice(kind, "masks", tuple(names))
    eps = None
    if project:
        eps = getattr(attack, "eps", None)
        if eps is None:
            raise ValueError("`project=True` needs the attack's `eps` (the attack has no `eps` attribute)")
    with preserved_model_state(model):
        num_classes = num_classes_of(model, x, labels=y, labels_name="y")
        with torch.enable_grad(), targets_checked(attack, num_classes):
            adv = attack(x, y).detach().to(device=x.device, dtype=x.dtype)
        mask_tensors: Dict[str, torch.Tensor] = {}
        phi = None  # Shapley values computed once for both PFC and NFC
        height, width = x.shape[-2:]
        for kind in masks:
            if kind in ("positive", "negative"):
                if phi is None:
                    explainer = FrequencyMaskedAttack(attack, kind, shapley=shapley, shapley_kwargs=shapley_kwargs)
                    phi = explainer._shapley_values(x, y)
                mask_tensors[names[kind]] = phi > 0 if kind == "positive" else phi < 0
            else:
                mask_tensors[names[kind]] = band_mask(height, width, kind, low_threshold=low_threshold,
                                                      high_threshold=high_threshold, device=x.device)
        result = evaluate_masked_perturbations(model, x, y, adv, masks=mask_tensors, bands=False,
                                               project_eps=eps, batch_size=batch_size)
    correct = {"x": result.correct["clean"], "x+delta": result.correct["full"]}
    correct.update({name: result.correct[name] for name in mask_tensors})
    return correct
