"""Class-wise frequency analysis over :class:`~freqplug.attributions.FrequencyShapley` results (Chen2022 §4.3).

* :func:`classwise_hfc_shapley` (Chen2022 Fig. 5): per class, the mean |phi| of the high-frequency components
  (bins above 70 % of the largest radius) of a standard model, next to the per-class robust accuracy of another
  (adversarially trained) model, with their Pearson and Spearman correlations over the classes.
* :func:`significant_component_ratio` (Chen2022 Fig. 7): per frequency, the fraction of images whose
  component is a PFC (or an NFC) with a significantly large Shapley value, |phi| > 20 % of the largest |phi|
  of that frequency over the images.
* :func:`per_class_accuracy`: per-class accuracy from per-image correctness (e.g. ``AutoAttackResult.robust``).

Results are ``FrequencyShapley(...).attribute(..., return_result=True)`` objects (or a list of them, for
images attributed in several calls, which must share one partition into players); the functions work on the
bin maps (``result.attributions``, (N, H, W), fft2 layout, every bin carrying its player's value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch

from .._optional import require
from .._validation import check_choice, check_labels, check_number, check_positive_int, check_tensor
from ..spectral import radial_mask, radial_profile

__all__ = ["ClasswiseHFC", "SignificantComponents", "classwise_hfc_shapley", "hfc_mask", "per_class_accuracy",
           "significant_component_ratio"]

#: Chen2022 §4.3: "we intuitively take components with frequency higher than 70% of the largest frequency".
HFC_THRESHOLD = 0.7
#: Chen2022 Fig. 7: "absolute value greater than 20% of the maximum absolute Shapley value of the same frequency".
SIGNIFICANT_FRACTION = 0.2


def hfc_mask(height: int, width: int, threshold: float = HFC_THRESHOLD, *, metric: str = "l2") -> torch.Tensor:
    """High-frequency bins of Chen2022 §4.3: ``r(u, v) > threshold * r_max``, bool (H, W) in fft2 layout.

    ``r`` is the distance from DC (``metric``), ``r_max`` the largest of the grid (the spectral core's
    ``radial_mask(..., normalized=True, keep="above")``, as eq. 12's sigma_high with eps_high = ``threshold``).
    """
    check_positive_int(height, "height")
    check_positive_int(width, "width")
    check_number(threshold, "threshold", minimum=0.0, maximum=1.0)
    return radial_mask(height, width, threshold, metric=metric, normalized=True, keep="above")


def _attributions(results: Any, name: str = "results") -> torch.Tensor:
    """(N, H, W) float64 bin maps of one result or a list of results sharing one partition."""
    from ..attributions.frequency_shapley import FrequencyShapleyResult

    items = [results] if not isinstance(results, (list, tuple)) else list(results)
    if not items:
        raise ValueError(f"`{name}` must be a FrequencyShapleyResult or a non-empty list of them, got an empty list")
    for i, item in enumerate(items):
        if not isinstance(item, FrequencyShapleyResult):
            where = name if len(items) == 1 and not isinstance(results, (list, tuple)) else f"{name}[{i}]"
            raise TypeError(f"`{where}` must be a FrequencyShapleyResult (FrequencyShapley.attribute(..., "
                            f"return_result=True)), got {type(item).__name__}")
        if item.players != items[0].players:
            raise ValueError(f"`{name}[{i}]` was computed with players {item.players!r}, `{name}[0]` with "
                             f"{items[0].players!r}: results over different partitions cannot be pooled")
        expected = (item.values.shape[0], *item.players.shape)
        if tuple(item.attributions.shape) != expected:
            raise ValueError(f"`{name}` attributions have shape {tuple(item.attributions.shape)}, but its values and "
                             f"players say {expected}: the result was modified or assembled by hand inconsistently")
    maps = torch.cat([item.attributions.detach().cpu().double() for item in items])
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"`{name}` holds NaN or infinite Shapley values")
    return maps


def _labels(labels, n: int, num_classes: Optional[int]) -> torch.Tensor:
    check_labels(labels, "labels", n, num_classes=num_classes)
    if num_classes is None and labels.numel() == 0:
        raise ValueError("`labels` is empty")
    return labels.detach().cpu().long()


def per_class_accuracy(correct: torch.Tensor, labels: torch.Tensor, num_classes: Optional[int] = None
                       ) -> torch.Tensor:
    """Per-class accuracy (K,) float64 from per-image correctness; NaN for classes without images.

    Args:
        correct: (N,) bool, e.g. ``AutoAttackResult.robust`` (robust accuracy per class) or
            ``predictions == labels``.
        labels: (N,) class indices. num_classes: K (default: ``labels.max() + 1``).
    """
    check_tensor(correct, "correct")
    if correct.dtype != torch.bool or correct.dim() != 1:
        raise TypeError(f"`correct` must be a (N,) bool tensor, got dtype {correct.dtype} shape {tuple(correct.shape)}")
    labels = _labels(labels, correct.shape[0], num_classes)
    k = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    counts = torch.bincount(labels, minlength=k).double()
    hits = torch.bincount(labels, weights=correct.cpu().double(), minlength=k)
    return torch.where(counts > 0, hits / counts.clamp_min(1), torch.full_like(counts, float("nan")))


@dataclass
class ClasswiseHFC:
    """Chen2022 Fig. 5: per-class |phi| of the HFC of one model and per-class robust accuracy of another.

    Attributes:
        hfc_abs: (K,) mean over the class's images of the mean |phi| over HFC bins (NaN: no image of the class).
        counts: (K,) images per class in the Shapley results.
        robust_accuracy: (K,) the other model's per-class robust accuracy as given (None when not given).
        pearson, spearman: correlations of ``hfc_abs`` and ``robust_accuracy`` over the classes where both are
            defined (NaN with fewer than 3 such classes, or when either is constant); Chen2022 report Pearson
            -0.8765 on CIFAR-10 (ST ResNet-18 vs AT model).
        pearson_p, spearman_p: their two-sided p-values (scipy.stats).
        num_classes: classes where both numbers are defined (those the correlations use; 0 without
            ``robust_accuracy``).
        threshold: HFC threshold (fraction of r_max).
    """

    hfc_abs: torch.Tensor
    counts: torch.Tensor
    robust_accuracy: Optional[torch.Tensor]
    pearson: float
    spearman: float
    pearson_p: float
    spearman_p: float
    num_classes: int
    threshold: float

    def to_dict(self) -> Dict[str, Any]:
        def floats(t):
            return None if t is None else [None if math.isnan(v) else v for v in t.double().tolist()]

        def number(v):
            return None if math.isnan(v) else v

        return {"hfc_abs": floats(self.hfc_abs), "counts": self.counts.tolist(),
                "robust_accuracy": floats(self.robust_accuracy), "pearson": number(self.pearson),
                "spearman": number(self.spearman), "pearson_p": number(self.pearson_p),
                "spearman_p": number(self.spearman_p), "num_classes": self.num_classes, "threshold": self.threshold}


def _correlations(a: torch.Tensor, b: torch.Tensor):
    keep = ~(torch.isnan(a) | torch.isnan(b))
    count = int(keep.sum())
    nan = float("nan")
    if count < 3 or float(a[keep].std()) == 0 or float(b[keep].std()) == 0:
        return nan, nan, nan, nan, count
    stats = require("scipy.stats", "the class-wise correlations (classwise_hfc_shapley)")
    pa, pb = a[keep].numpy(), b[keep].numpy()
    pearson = stats.pearsonr(pa, pb)
    spearman = stats.spearmanr(pa, pb)
    return (float(pearson[0]), float(spearman[0]), float(pearson[1]), float(spearman[1]), count)


def classwise_hfc_shapley(results, labels: torch.Tensor, *, robust_accuracy: Union[torch.Tensor, Sequence[float],
                                                                                    Mapping[int, float], None] = None,
                          num_classes: Optional[int] = None, threshold: float = HFC_THRESHOLD,
                          metric: str = "l2") -> ClasswiseHFC:
    """Per-class mean |phi| of the high-frequency components, against per-class robust accuracy (Chen2022 Fig. 5).

    ``hfc_abs[k] = mean_{i: y_i = k} mean_{(u, v) in HFC} |phi_i(u, v)|`` with HFC the bins of
    :func:`hfc_mask` (``r > threshold * r_max``; Chen2022 take 70 %), ``phi_i`` the bin map of image i (every
    bin carries its player's value, so a player is weighted by its number of HFC bins).

    Args:
        results: a ``FrequencyShapleyResult`` of the standard model (or a list of them sharing one partition),
            computed with ``target`` = the true labels, as in Chen2022.
        labels: (N,) the classes of the attributed images, in the results' order (N = images in ``results``).
        robust_accuracy: per-class robust accuracy of the other (robust) model: (K,) tensor or sequence (NaN
            for classes without data) or ``{class: accuracy}``; see :func:`per_class_accuracy`.
        num_classes: K (default: from ``robust_accuracy``, else ``labels.max() + 1``).
        threshold: HFC threshold, a fraction of r_max in [0, 1).
        metric: radius ``"l2"`` or ``"linf"``.

    Returns:
        :class:`ClasswiseHFC`.
    """
    maps = _attributions(results)
    check_number(threshold, "threshold", minimum=0.0, maximum=1.0)
    check_choice(metric, "metric", ("l2", "linf"))
    robust = None
    if robust_accuracy is not None:
        robust = _robust_vector(robust_accuracy, num_classes)
        if num_classes is None:
            num_classes = robust.shape[0]
    labels = _labels(labels, maps.shape[0], num_classes)
    k = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    mask = hfc_mask(maps.shape[-2], maps.shape[-1], threshold, metric=metric)
    if not bool(mask.any()):
        raise ValueError(f"`threshold`={threshold} leaves no high-frequency bin on a {tuple(mask.shape)} grid")
    per_image = maps.abs()[:, mask].mean(dim=1)  # (N,)
    counts = torch.bincount(labels, minlength=k)
    sums = torch.bincount(labels, weights=per_image, minlength=k)
    hfc_abs = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full((k,), float("nan"), dtype=torch.float64))
    if robust is None:
        nan = float("nan")
        return ClasswiseHFC(hfc_abs, counts, None, nan, nan, nan, nan, 0, float(threshold))
    pearson, spearman, pearson_p, spearman_p, used = _correlations(hfc_abs, robust)
    return ClasswiseHFC(hfc_abs, counts, robust, pearson, spearman, pearson_p, spearman_p, used, float(threshold))


def _robust_vector(robust_accuracy, num_classes: Optional[int]) -> torch.Tensor:
    if isinstance(robust_accuracy, Mapping):
        if not robust_accuracy:
            raise ValueError("`robust_accuracy` is an empty dict")
        keys = list(robust_accuracy)
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in keys):
            raise ValueError(f"`robust_accuracy` keys must be class indices >= 0, got {keys[:5]}")
        k = num_classes if num_classes is not None else max(keys) + 1
        vector = torch.full((k,), float("nan"), dtype=torch.float64)
        for c, v in robust_accuracy.items():
            if c >= k:
                raise ValueError(f"`robust_accuracy` has class {c}, outside `num_classes`={k}")
            vector[c] = float(v)
    else:
        vector = torch.as_tensor(robust_accuracy, dtype=torch.float64).detach().cpu()
        if vector.dim() != 1:
            raise ValueError(f"`robust_accuracy` must be a (K,) vector, got shape {tuple(vector.shape)}")
        if num_classes is not None and vector.shape[0] != num_classes:
            raise ValueError(f"`robust_accuracy` has {vector.shape[0]} classes but `num_classes`={num_classes}")
    finite = vector[~torch.isnan(vector)]
    if bool(((finite < 0) | (finite > 1)).any()) or bool(torch.isinf(vector).any()):
        low, high = float(vector.nan_to_num(0).min()), float(vector.nan_to_num(0).max())
        raise ValueError("`robust_accuracy` must hold accuracies in [0, 1] (NaN for classes without data), got "
                         f"values in [{low:.4g}, {high:.4g}]")
    return vector


@dataclass
class SignificantComponents:
    """Chen2022 Fig. 7: how often each frequency is a significant PFC or NFC.

    Attributes:
        pfc_ratio, nfc_ratio: (H, W) fft2 layout: fraction of images with ``phi > fraction * m(u, v)``
            (PFC) or ``phi < -fraction * m(u, v)`` (NFC), ``m(u, v) = max_i |phi_i(u, v)|`` over the images.
        pfc_radial, nfc_radial: (R,) their averages over rings of equal radius (the figure's frequency axis).
        by_class: ``{class: {"pfc_radial": (R,), "nfc_radial": (R,), "count": int}}`` when labels were given
            (m taken within the class).
        fraction: the significance fraction (0.2 in the paper). num_images: N.
    """

    pfc_ratio: torch.Tensor
    nfc_ratio: torch.Tensor
    pfc_radial: torch.Tensor
    nfc_radial: torch.Tensor
    by_class: Dict[int, Dict[str, Any]]
    fraction: float
    num_images: int

    def to_dict(self) -> Dict[str, Any]:
        return {"pfc_radial": self.pfc_radial.tolist(), "nfc_radial": self.nfc_radial.tolist(),
                "by_class": {str(c): {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in d.items()}
                             for c, d in self.by_class.items()},
                "fraction": self.fraction, "num_images": self.num_images}


def _ratios(maps: torch.Tensor, fraction: float):
    reference = fraction * maps.abs().amax(dim=0, keepdim=True)  # per frequency, over the images
    return (maps > reference).double().mean(dim=0), (maps < -reference).double().mean(dim=0)


def significant_component_ratio(results, *, labels: Optional[torch.Tensor] = None,
                                fraction: float = SIGNIFICANT_FRACTION, metric: str = "l2") -> SignificantComponents:
    """Fraction of images whose component at each frequency is a significantly large PFC / NFC (Chen2022 Fig. 7).

    "Significantly large": ``|phi_i(u, v)| > fraction * max_j |phi_j(u, v)|``, the maximum taken over the
    images at the same frequency (the paper's "maximum absolute Shapley value of the same frequency");
    a frequency no image gives a nonzero value (DC) counts for nobody.

    Args:
        results: ``FrequencyShapleyResult`` (or a list sharing one partition), clean images of one model.
        labels: optional (N,) classes: adds per-class radial ratios (maximum taken within the class).
        fraction: in (0, 1); the paper's 0.2.
        metric: ring radius ``"l2"`` or ``"linf"`` for the radial averages.

    Returns:
        :class:`SignificantComponents`.
    """
    maps = _attributions(results)
    check_number(fraction, "fraction", minimum=0.0, maximum=1.0, strict_minimum=True)
    check_choice(metric, "metric", ("l2", "linf"))
    pfc, nfc = _ratios(maps, fraction)
    by_class: Dict[int, Dict[str, Any]] = {}
    if labels is not None:
        labels = _labels(labels, maps.shape[0], None)
        for c in torch.unique(labels).tolist():
            p, q = _ratios(maps[labels == c], fraction)
            by_class[int(c)] = {"pfc_radial": radial_profile(p, metric=metric),
                                "nfc_radial": radial_profile(q, metric=metric), "count": int((labels == c).sum())}
    return SignificantComponents(pfc, nfc, radial_profile(pfc, metric=metric), radial_profile(nfc, metric=metric),
                                 by_class, float(fraction), int(maps.shape[0]))
