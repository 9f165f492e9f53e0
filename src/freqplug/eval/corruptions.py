"""Corruption robustness by frequency: accuracy under the CIFAR-10-C / ImageNet-C corruptions next to the
frequency profile of each corruption's noise (Chan2022 §4.1 and Table 1; Luo2024 Fig. 10).

The corruptions come from the maintained ``imagecorruptions`` package (Michaelis et al. 2019; the 15 + 4
corruptions of Hendrycks & Dietterich 2019, with ImageNet-C's severity parameters) or from a RobustBench-layout
CIFAR-10-C / CIFAR-100-C folder (:func:`freqplug.data.load_corrupted_cifar`), which holds the published
CIFAR-10-C images (CIFAR-sized parameters). The two are different data: report which one a number comes from.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .. import _distributed as _dist
from .._io import digest
from .._model import check_logits, model_device_dtype, num_classes_of, preserved_model_state
from .._optional import require
from .._validation import (check_budget, check_callable, check_choice, check_images, check_labels,
                           check_positive_int, check_seed)
from ..data.corruptions import CORRUPTIONS, load_corrupted_cifar
from ..spectral import energy_spectral_density, frequency_bias_of_magnitude, rfft2

__all__ = ["CORRUPTIONS", "CorruptionRobustness", "corrupt_images", "corruption_robustness"]

Key = Tuple[str, int]

_PATCH_LOCK = threading.RLock()


class _Proxy:
    """A module as imagecorruptions sees it: the real module with some names replaced."""

    def __init__(self, module, **replaced):
        self._module, self._replaced = module, replaced

    def __getattr__(self, name):
        return self._replaced[name] if name in self._replaced else getattr(self._module, name)


def _seeded_random_noise(random_noise):
    """``skimage.util.random_noise`` drawing from numpy's global RNG, as it did before scikit-image 0.19 (which
    made it ignore ``np.random.seed``, so ``impulse_noise`` gave other images on every call)."""

    def random_noise_from_global_rng(image, *args, **kwargs):
        if "rng" not in kwargs and "seed" not in kwargs:
            kwargs["rng"] = int(np.random.randint(2**31 - 1))
        return random_noise(image, *args, **kwargs)

    return random_noise_from_global_rng


class _NumpyWithFloat_:
    """numpy as imagecorruptions 1.1.2 sees it: numpy itself plus ``float_`` (removed in numpy 2.0; ``fog``'s
    plasma fractal allocates with ``dtype=np.float_``, which is float64)."""

    float_ = np.float64

    def __getattr__(self, name):
        return getattr(np, name)


@contextlib.contextmanager
def _imagecorruptions_shims(module) -> Iterator[None]:
    """Make imagecorruptions 1.1.2 run on current numpy and scikit-image, inside this block only.

    Two documented incompatibilities, both fixed by swapping a name inside ``imagecorruptions.corruptions``
    (restored on exit, so a direct user of imagecorruptions sees the package unchanged):

    - ``gaussian_blur``, ``glass_blur``: call ``skimage.filters.gaussian(..., multichannel=True)``; scikit-image
      0.19 replaced ``multichannel`` by ``channel_axis`` and 0.21 removed it (TypeError). The shim passes
      ``channel_axis=-1`` instead, which is the same filter.
    - ``fog``: allocates with ``np.float_``, removed in numpy 2.0 (AttributeError). The shim gives the module a
      numpy whose ``float_`` is ``float64`` (what ``np.float_`` was).
    - ``impulse_noise``: ``skimage.util.random_noise`` ignores numpy's global seed since scikit-image 0.19, so the
      corruption was not reproducible. The shim passes it an ``rng`` drawn from numpy's (seeded) global RNG.
    """
    with _PATCH_LOCK:
        saved = {}
        gaussian = getattr(module, "gaussian", None)
        if gaussian is not None and not _accepts_multichannel(gaussian):
            def gaussian_with_multichannel(image, *args, multichannel=None, **kwargs):
                if multichannel is not None and "channel_axis" not in kwargs:
                    kwargs["channel_axis"] = -1 if multichannel else None
                return gaussian(image, *args, **kwargs)

            saved["gaussian"] = gaussian
            module.gaussian = gaussian_with_multichannel
        if not hasattr(np, "float_") and getattr(module, "np", None) is np:
            saved["np"] = np
            module.np = _NumpyWithFloat_()
        skimage = getattr(module, "sk", None)
        if skimage is not None and "rng" in _parameters(skimage.util.random_noise):
            saved["sk"] = skimage
            module.sk = _Proxy(skimage, util=_Proxy(skimage.util,
                                                    random_noise=_seeded_random_noise(skimage.util.random_noise)))
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(module, name, value)


def _parameters(function) -> Tuple[str, ...]:
    import inspect

    try:
        return tuple(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # pragma: no cover - a C function without a signature
        return ()


def _accepts_multichannel(function) -> bool:
    parameters = _parameters(function)
    return not parameters or "multichannel" in parameters


def _imagecorruptions():
    with warnings.catch_warnings():  # imagecorruptions imports pkg_resources (deprecated) at import time
        warnings.simplefilter("ignore")
        package = require("imagecorruptions", "freqplug.eval.corruption_robustness")
        corruptions_module = require("imagecorruptions.corruptions", "freqplug.eval.corruption_robustness")
    return package, corruptions_module


def _numpy_seed(seed: int, index: int, corruption: str, severity: int) -> List[int]:
    """Seed words of one image's corruption: independent of batching and of the other images and corruptions."""
    return [seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, index & 0xFFFFFFFF, index >> 32 & 0xFFFFFFFF,
            zlib.crc32(corruption.encode()), int(severity)]


def _check_corruptions(corruptions) -> Tuple[str, ...]:
    if isinstance(corruptions, str):
        corruptions = (corruptions,)
    try:
        names = tuple(corruptions)
    except TypeError:
        raise TypeError(f"`corruptions` must be a sequence of corruption names, got {type(corruptions).__name__}")
    if not names:
        raise ValueError("`corruptions` must name at least one corruption")
    for name in names:
        if not isinstance(name, str) or name not in CORRUPTIONS:
            raise ValueError(f"`corruptions` must hold names among {', '.join(CORRUPTIONS)}; got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"`corruptions` names a corruption twice: {list(names)}")
    return names


def _check_severities(severities) -> Tuple[int, ...]:
    if isinstance(severities, (int, np.integer)) and not isinstance(severities, bool):
        severities = (int(severities),)
    try:
        values = tuple(severities)
    except TypeError:
        raise TypeError(f"`severities` must be a sequence of ints in 1..5, got {type(severities).__name__}")
    if not values:
        raise ValueError("`severities` must hold at least one severity")
    for s in values:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 1 <= s <= 5:
            raise ValueError(f"`severities` must hold ints in 1..5 (the 5 levels of CIFAR-10-C/ImageNet-C), got {s!r}")
    values = tuple(int(s) for s in values)
    if len(set(values)) != len(values):
        raise ValueError(f"`severities` names a severity twice: {list(values)}")
    return values


def _to_uint8_hwc(x: torch.Tensor) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] -> (N, H, W, C) uint8, rounded to the nearest of the 256 levels."""
    return (x.detach().to("cpu", torch.float64).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def corrupt_images(x: torch.Tensor, corruption: str, severity: int, *, seed: int = 0,
                   start_index: int = 0) -> torch.Tensor:
    """``imagecorruptions.corrupt`` applied to every image, reproducibly: the corruptions of CIFAR-10-C/ImageNet-C.

    Each image is converted to uint8 HWC (``round(255 x)``), corrupted, and converted back (``/ 255``). The random
    corruptions (noise, glass, motion, snow, frost, spatter, elastic) draw from numpy's global RNG; it is seeded per
    image from ``(seed, start_index + i, corruption, severity)`` inside a saved and restored RNG state, so an image's
    corruption does not depend on the batch it is in and the caller's numpy RNG is left as it was.
    ``gaussian_blur``, ``glass_blur`` and ``fog`` run through a documented shim (see ``_imagecorruptions_shims``).
    Grey images (C = 1) are corrupted as RGB (imagecorruptions' convention) and averaged back to one channel.

    Args:
        x: images (N, C, H, W) in [0, 1], C in {1, 3}, H, W >= 32 (imagecorruptions' minimum).
        corruption: one of :data:`freqplug.data.CORRUPTIONS`.
        severity: 1..5 (imagecorruptions' parameters are ImageNet-C's at every image size).
        seed: non-negative int.
        start_index: dataset index of ``x[0]`` (so chunks of a data set get the same corruptions as the whole).

    Returns:
        (N, C, H, W) float32 on CPU, on the 1/255 grid.
    """
    check_images(x, "x", min_size=32)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"`x` must have 1 or 3 channels (imagecorruptions' images), got {x.shape[1]}")
    (name,) = _check_corruptions((corruption,))
    (severity,) = _check_severities((severity,))
    seed = check_seed(seed, "seed", allow_none=False)
    if isinstance(start_index, bool) or not isinstance(start_index, int) or start_index < 0:
        raise ValueError(f"`start_index` must be a non-negative int, got {start_index!r}")
    return torch.from_numpy(_corrupt_uint8(_to_uint8_hwc(x), name, severity, seed, start_index)).permute(
        0, 3, 1, 2).float().div(255).contiguous()


def _corrupt_uint8(images: np.ndarray, name: str, severity: int, seed: int, start_index: int) -> np.ndarray:
    package, module = _imagecorruptions()
    grey = images.shape[-1] == 1
    out = np.empty(images.shape, dtype=np.float64 if grey else np.uint8)
    with _numpy_fork_rng(), _imagecorruptions_shims(module), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        for i, image in enumerate(images):
            np.random.seed(_numpy_seed(seed, start_index + i, name, severity))
            rgb = np.repeat(image, 3, axis=-1) if grey else image
            corrupted = package.corrupt(rgb, severity=severity, corruption_name=name)
            if corrupted.shape != rgb.shape:
                raise ValueError(f"imagecorruptions' {name!r} at severity {severity} returned shape "
                                 f"{corrupted.shape} for an image of shape {rgb.shape}")
            out[i] = corrupted.mean(axis=-1, keepdims=True) if grey else corrupted
    return out


@contextlib.contextmanager
def _numpy_fork_rng() -> Iterator[None]:
    """Fork numpy's global (legacy) RNG, as ``torch.random.fork_rng`` does torch's: whatever is seeded or drawn
    inside (imagecorruptions draws from ``np.random``), the caller's state is put back on exit."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


@dataclass(eq=False)  # holds tensors; compare to_dict() results
class CorruptionRobustness:
    """Accuracy per corruption and severity and the frequency profile of every corruption's noise.

    Attributes:
        corruptions, severities: what was measured, in the order given.
        accuracy: ``{(corruption, severity): accuracy in [0, 1]}``.
        clean_accuracy: accuracy on the clean images (the reference of Chan2022 Table 1's "Clean" row).
        frequency_bias: ``{corruption: B_low}`` of the noise (corrupted - clean), the mean over severities of
            :func:`freqplug.spectral.frequency_bias` of the noise of all images at one severity (Chan2022 eq. 10;
            Table 1's last column; higher = lower-frequency noise; flat white noise gives log(34) ~ 3.5 at 32x32).
        frequency_bias_per_severity: ``{(corruption, severity): B_low}``.
        radial_profile: ``{corruption: (R,) tensor}``, the noise's energy per radial frequency
            (:func:`freqplug.spectral.energy_spectral_density`, Luo2024 eq. 1), averaged over images, channels and
            severities; ``radial_profile_per_severity`` per (corruption, severity).
        baseline_accuracy, baseline_clean_accuracy: the baseline model's, when one was given (for mCE).
        source: ``"imagecorruptions"`` (generated) or ``"folder:<CIFAR-10-C|CIFAR-100-C>"`` (read).
        seed, n_examples, inputs_digest: what the numbers are for (``inputs_digest`` is sha256 of x and y);
            a precomputed result is accepted as ``baseline`` only when these and ``source`` match.
        evaluations: model forwards made (images), baseline included.
    """

    corruptions: Tuple[str, ...]
    severities: Tuple[int, ...]
    accuracy: Dict[Key, float]
    clean_accuracy: float
    frequency_bias: Dict[str, float]
    frequency_bias_per_severity: Dict[Key, float]
    radial_profile: Dict[str, torch.Tensor]
    radial_profile_per_severity: Dict[Key, torch.Tensor]
    source: str
    seed: int
    n_examples: int
    inputs_digest: str
    evaluations: int = 0
    baseline_accuracy: Optional[Dict[Key, float]] = None
    baseline_clean_accuracy: Optional[float] = None
    _warned: bool = field(default=False, repr=False, compare=False)

    def mean_accuracy(self, corruption: str) -> float:
        """Accuracy of one corruption averaged over the severities (Chan2022 Table 1's entries)."""
        check_choice(corruption, "corruption", self.corruptions)
        return float(np.mean([self.accuracy[(corruption, s)] for s in self.severities]))

    @property
    def corruption_error(self) -> Optional[Dict[str, float]]:
        """``{corruption: CE}`` relative to the baseline, or None without one (Hendrycks & Dietterich 2019):
        ``CE_c = sum_s err(c, s) / sum_s err_baseline(c, s)`` in percent (100 = as many errors as the baseline).
        ``nan`` where the baseline makes no error on that corruption (the ratio is undefined)."""
        if self.baseline_accuracy is None:
            return None
        errors = {}
        for c in self.corruptions:
            err = sum(1 - self.accuracy[(c, s)] for s in self.severities)
            base = sum(1 - self.baseline_accuracy[(c, s)] for s in self.severities)
            errors[c] = 100 * err / base if base > 0 else float("nan")
        return errors

    @property
    def mce(self) -> Optional[float]:
        """Mean corruption error over the corruptions (percent; 100 = the baseline), or None without a baseline.
        ``nan`` when a corruption's CE is undefined (the baseline made no error on it; too few images)."""
        errors = self.corruption_error
        if errors is None:
            return None
        values = list(errors.values())
        if any(math.isnan(v) for v in values) and not self._warned:
            self._warned = True
            bad = [c for c, v in errors.items() if math.isnan(v)]
            warnings.warn(f"mCE is undefined: the baseline makes no error on {', '.join(bad)} (use more images)",
                          RuntimeWarning, stacklevel=2)
        return float(np.mean(values))

    def table(self) -> List[Dict[str, Any]]:
        """One row per corruption, ordered by descending B_low of its noise as Chan2022 Table 1.

        Each row: ``corruption``, ``b_low``, ``accuracy`` (mean over severities), ``accuracy_per_severity``
        ``{severity: accuracy}`` and, with a baseline, ``baseline_accuracy`` and ``ce`` (percent).
        """
        errors = self.corruption_error
        rows = []
        for c in sorted(self.corruptions, key=lambda c: -self.frequency_bias[c]):
            row: Dict[str, Any] = {"corruption": c, "b_low": self.frequency_bias[c], "accuracy": self.mean_accuracy(c),
                                   "accuracy_per_severity": {s: self.accuracy[(c, s)] for s in self.severities}}
            if errors is not None:
                row["baseline_accuracy"] = float(np.mean([self.baseline_accuracy[(c, s)] for s in self.severities]))
                row["ce"] = errors[c]
            rows.append(row)
        return rows

    def to_markdown(self) -> str:
        """The table as markdown (accuracy in percent; B_low; CE with a baseline), Chan2022 Table 1's layout."""
        with_baseline = self.baseline_accuracy is not None
        head = "| corruption | B_low (noise) | accuracy (%) |" + (" baseline (%) | CE (%) |" if with_baseline else "")
        lines = [head, "|" + "---|" * (head.count("|") - 1)]
        lines.append(f"| clean | - | {100 * self.clean_accuracy:.2f} |"
                     + (f" {100 * self.baseline_clean_accuracy:.2f} | - |" if with_baseline else ""))
        for row in self.table():
            line = f"| {row['corruption']} | {row['b_low']:.2f} | {100 * row['accuracy']:.2f} |"
            if with_baseline:
                line += f" {100 * row['baseline_accuracy']:.2f} | {row['ce']:.2f} |"
            lines.append(line)
        if with_baseline:
            lines.append(f"| mCE | - | - | - | {self.mce:.2f} |")
        return "\n".join(lines)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-able: ``accuracy`` as ``{corruption: {severity (str): accuracy}}``, profiles as lists; NaN -> None."""
        def clean(v):
            return None if isinstance(v, float) and math.isnan(v) else v

        def per_severity(d):
            return {c: {str(s): clean(float(d[(c, s)])) for s in self.severities} for c in self.corruptions}

        out: Dict[str, Any] = {
            "corruptions": list(self.corruptions), "severities": list(self.severities), "source": self.source,
            "seed": self.seed, "n_examples": self.n_examples, "inputs_digest": self.inputs_digest,
            "evaluations": self.evaluations, "clean_accuracy": self.clean_accuracy,
            "accuracy": per_severity(self.accuracy),
            "mean_accuracy": {c: self.mean_accuracy(c) for c in self.corruptions},
            "frequency_bias": {c: float(self.frequency_bias[c]) for c in self.corruptions},
            "frequency_bias_per_severity": per_severity(self.frequency_bias_per_severity),
            "radial_profile": {c: [float(v) for v in self.radial_profile[c]] for c in self.corruptions},
            "order_by_b_low": [row["corruption"] for row in self.table()],
        }
        if self.baseline_accuracy is not None:
            out["baseline_accuracy"] = per_severity(self.baseline_accuracy)
            out["baseline_clean_accuracy"] = self.baseline_clean_accuracy
            out["corruption_error"] = {c: clean(v) for c, v in self.corruption_error.items()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out["mce"] = clean(self.mce)
        return out


def _check_baseline_result(baseline: CorruptionRobustness, corruptions, severities, source: str, seed: int,
                           inputs_digest: str) -> None:
    problems = []
    missing = [f"{c}/{s}" for c in corruptions for s in severities if (c, s) not in baseline.accuracy]
    if missing:
        problems.append(f"it has no accuracy for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if baseline.inputs_digest != inputs_digest:
        problems.append("it was computed on other images or labels (inputs_digest differs)")
    if baseline.source != source:
        problems.append(f"its corruptions come from {baseline.source!r}, these from {source!r}")
    if source == "imagecorruptions" and baseline.seed != seed:
        problems.append(f"its corruptions were drawn with seed {baseline.seed}, these with seed {seed}")
    if problems:
        raise ValueError("`baseline` (a precomputed CorruptionRobustness) does not match this call: "
                         + "; ".join(problems))


def corruption_robustness(
    model: Callable,
    x: torch.Tensor,
    y: torch.Tensor,
    corruptions: Union[str, Sequence[str]] = CORRUPTIONS,
    severities: Union[int, Sequence[int]] = (1, 2, 3, 4, 5),
    *,
    batch_size: int = 256,
    seed: int = 0,
    baseline: Optional[Union[Callable, CorruptionRobustness]] = None,
    data_dir: Optional[Union[str, Path]] = None,
    dataset: str = "cifar10",
    device: Optional[torch.device] = None,
    max_evaluations: Optional[float] = None,
    show_progress: bool = False,
) -> CorruptionRobustness:
    """Accuracy of ``model`` per corruption and severity, and the frequency profile of each corruption's noise.

    Chan2022 §4.1, Table 1: accuracy under the 19 corruptions of CIFAR-10-C at 5 severities, the corruptions
    ordered by the low-frequency bias B_low of their noise (Chan2022 eq. 10 applied to corrupted - clean), and
    the mean corruption error relative to a baseline model (Hendrycks & Dietterich 2019:
    ``CE_c = sum_s err_c,s / sum_s err^base_c,s``, ``mCE = mean_c CE_c``). Luo2024 Fig. 10 plots such
    accuracies against a model's spectral robustness score.

    Two sources of corrupted images:

    - generated (``data_dir=None``): :func:`corrupt_images` (imagecorruptions, seeded per image). Its severities
      are ImageNet-C's parameters at every image size; they are stronger at 32x32 than the published CIFAR-10-C,
      so accuracies are lower than CIFAR-10-C's (the B_low ordering is what transfers).
    - read (``data_dir`` given): the published CIFAR-10-C / CIFAR-100-C files in RobustBench's layout
      (:func:`freqplug.data.load_corrupted_cifar`); ``x``, ``y`` must then be the first N CIFAR test images
      (``freqplug.data.robustbench_folder``), whose corrupted versions the files hold; ``y`` is checked against
      the folder's ``labels.npy``.

    Cost: ``N * (1 + len(corruptions) * len(severities))`` model forwards (the 1 is the clean accuracy), twice
    that with a baseline model; checked against ``max_evaluations`` before anything runs. Forwards are batched
    across corruptions and severities in chunks of ``batch_size``; the corruption of every image is numpy on
    CPU (per image, as imagecorruptions works). Memory: the noise of one (corruption, severity) for all N
    images (N * C * H * W float32) at a time.

    The model's modes, ``requires_grad`` and ``.grad`` and the inputs are left unchanged, as are torch's and
    numpy's global RNGs. Same seed, same result.

    Args:
        model: classifier on images in [0, 1] returning logits (N, K).
        x: clean images (N, C, H, W) in [0, 1], C in {1, 3}, H, W >= 32.
        y: labels (N,) in [0, K).
        corruptions: names among :data:`freqplug.data.CORRUPTIONS` (default all 19).
        severities: among 1..5.
        batch_size: images per forward.
        seed: seed of the random corruptions (non-negative int).
        baseline: a baseline model (evaluated on the same corrupted images) or a :class:`CorruptionRobustness`
            computed with the same images, source, seed and corruptions; gives ``corruption_error``/``mce``.
        data_dir: folder holding ``CIFAR-10-C/`` (or ``CIFAR-100-C/``) to read instead of generating.
        dataset: ``"cifar10"`` or ``"cifar100"`` (with ``data_dir``).
        device: where the model runs (default: its parameters' device).
        max_evaluations: refuse a call that needs more model forwards (default
            :data:`freqplug._validation.DEFAULT_MAX_EVALUATIONS`; ``float("inf")`` for no limit).
        show_progress: a tqdm bar over (corruption, severity) pairs.

    Returns:
        :class:`CorruptionRobustness`.
    """
    return _corruption_robustness(model, x, y, corruptions, severities, batch_size=batch_size, seed=seed,
                                  baseline=baseline, data_dir=data_dir, dataset=dataset, device=device,
                                  max_evaluations=max_evaluations, show_progress=show_progress, unit_size=None)


def _corruption_robustness(model, x, y, corruptions, severities, *, batch_size, seed, baseline, data_dir, dataset,
                           device, max_evaluations, show_progress, unit_size: Optional[int]
                           ) -> Optional[CorruptionRobustness]:
    """:func:`corruption_robustness`, its images optionally cut into units of ``unit_size`` split across ranks
    (:func:`freqplug._distributed.map_units`; None: one unit, no collective).

    Every unit measures per-example sums (correct predictions per corruption and severity, the noise's DFT
    magnitudes and energy spectral densities summed over its images and channels, float64); the corruption of
    an image is seeded by its dataset index, so a unit's sums do not depend on which other images share it. The
    writer adds the units' sums in unit order and assembles one :class:`CorruptionRobustness`, the same for any
    number of ranks. Returns None on the ranks that are not the writer.
    """
    check_callable(model, "model")
    check_images(x, "x", min_size=32)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"`x` must have 1 or 3 channels (the corruptions are defined on RGB/grey images), got "
                         f"{x.shape[1]}")
    n = x.shape[0]
    check_labels(y, "y", n)
    names = _check_corruptions(corruptions)
    levels = _check_severities(severities)
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = check_seed(seed, "seed", allow_none=False)
    baseline_model = None
    if baseline is not None and not isinstance(baseline, CorruptionRobustness):
        check_callable(baseline, "baseline")
        baseline_model = baseline
    models = [model] + ([baseline_model] if baseline_model is not None else [])
    evaluations = n * (1 + len(names) * len(levels)) * len(models)
    check_budget(evaluations, max_evaluations, "corruption_robustness",
                 hint=f"{n} images x (1 + {len(names)} corruptions x {len(levels)} severities) x "
                      f"{len(models)} model(s)")

    x_cpu, y_cpu = x.detach().cpu(), y.detach().cpu()
    inputs_digest = digest(x_cpu, y_cpu)
    if data_dir is None:
        source = "imagecorruptions"
        _imagecorruptions()  # the ImportError naming the extra, before any work
    else:
        from ..data.corruptions import CORRUPTED_CIFAR_FOLDERS, corrupted_cifar_path, corrupted_cifar_size

        check_choice(dataset, "dataset", tuple(CORRUPTED_CIFAR_FOLDERS))
        corrupted_cifar_path(data_dir, dataset)
        source = f"folder:{CORRUPTED_CIFAR_FOLDERS[dataset]}"
        for name in names:
            available = corrupted_cifar_size(data_dir, name, dataset)
            if available < n:
                raise ValueError(f"`x` holds {n} images but {name}.npy in `data_dir` has {available} per severity")
        _, folder_y = load_corrupted_cifar(data_dir, names[0], levels[0], dataset=dataset, n_examples=n)
        if not torch.equal(folder_y, y_cpu.long()):
            bad = int((folder_y != y_cpu.long()).sum())
            raise ValueError(f"`y` differs from the folder's labels.npy on {bad} of {n} images: with `data_dir`, "
                             "`x` and `y` must be the first N CIFAR test images the corruption files were made from")
    if isinstance(baseline, CorruptionRobustness):
        _check_baseline_result(baseline, names, levels, source, seed, inputs_digest)

    pairs = [(c, s) for c in names for s in levels]
    unit_kwargs = dict(models=models, y=y_cpu, pairs=pairs, batch_size=batch_size, device=device,
                       seed=seed, data_dir=data_dir, dataset=dataset, show_progress=show_progress)
    if unit_size is None:
        parts = [_measure_unit(x_cpu, first_index=0, **unit_kwargs)]
    else:
        parts = _dist.map_units(n, unit_size, lambda u, indices: _measure_unit(
            x_cpu[indices[0]:indices[-1] + 1], first_index=indices[0], **unit_kwargs))
        if parts is None:
            return None
    channels = x_cpu.shape[1]
    correct = [{key: sum(part["correct"][i][key] for part in parts) for key in ["clean"] + pairs}
               for i in range(len(models))]
    b_low: Dict[Key, float] = {}
    profile: Dict[Key, torch.Tensor] = {}
    for key in pairs:  # means over images and channels of the unit sums, added in unit order
        magnitude = _dist.sum_ordered([part["magnitude"][key] for part in parts]) / (n * channels)
        b_low[key] = float(frequency_bias_of_magnitude(magnitude))
        profile[key] = _dist.sum_ordered([part["esd"][key] for part in parts]) / (n * channels)
    result = CorruptionRobustness(
        corruptions=names, severities=levels, accuracy={k: correct[0][k] / n for k in pairs},
        clean_accuracy=correct[0]["clean"] / n,
        frequency_bias={c: float(np.mean([b_low[(c, s)] for s in levels])) for c in names},
        frequency_bias_per_severity=b_low,
        radial_profile={c: torch.stack([profile[(c, s)] for s in levels]).mean(0) for c in names},
        radial_profile_per_severity=profile, source=source, seed=seed, n_examples=n, inputs_digest=inputs_digest,
        evaluations=evaluations)
    if baseline_model is not None:
        result.baseline_accuracy = {k: correct[1][k] / n for k in pairs}
        result.baseline_clean_accuracy = correct[1]["clean"] / n
    elif baseline is not None:
        result.baseline_accuracy = {k: baseline.accuracy[k] for k in pairs}
        result.baseline_clean_accuracy = baseline.clean_accuracy
    return result


def _measure_unit(x_cpu: torch.Tensor, *, first_index: int, models, y, pairs, batch_size, device, seed, data_dir,
                  dataset, show_progress) -> Dict[str, Any]:
    """The sums of one unit of images (dataset indices ``first_index ...``): correct predictions per model and key
    (``"clean"`` and every (corruption, severity)), and per (corruption, severity) the noise's one-sided DFT
    magnitude (H, W//2+1) and energy spectral density (R,) summed over images and channels, float64."""
    n = x_cpu.shape[0]
    y_unit = y[first_index:first_index + n]
    with contextlib.ExitStack() as stack:
        for m in models:
            stack.enter_context(preserved_model_state(m, eval_mode=True))
        stack.enter_context(torch.no_grad())
        evaluators = [_Evaluator(m, y_unit, batch_size, device, "model" if i == 0 else "baseline")
                      for i, m in enumerate(models)]
        for ev in evaluators:
            ev.check_first(x_cpu[:1])
        # The clean images as the model sees them; the noise is measured against the same reference.
        clean = x_cpu.float() if data_dir is not None else torch.from_numpy(_to_uint8_hwc(x_cpu)).permute(
            0, 3, 1, 2).float().div(255)
        for ev in evaluators:
            ev.add("clean", x_cpu, 0)
        magnitude: Dict[Key, torch.Tensor] = {}
        esd: Dict[Key, torch.Tensor] = {}
        from tqdm.auto import tqdm

        for c, s in tqdm(pairs, desc="corruptions", disable=not show_progress, unit="pair"):
            noise = torch.empty(n, *x_cpu.shape[1:], dtype=torch.float32)
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                if data_dir is None:
                    corrupted = torch.from_numpy(_corrupt_uint8(_to_uint8_hwc(x_cpu[start:stop]), c, s, seed,
                                                                first_index + start))
                    corrupted = corrupted.permute(0, 3, 1, 2).float().div(255)
                else:
                    corrupted, _ = load_corrupted_cifar(data_dir, c, s, dataset=dataset, n_examples=stop - start,
                                                        start=first_index + start)
                    if corrupted.shape[1:] != x_cpu.shape[1:]:
                        raise ValueError(f"`x` images have shape {tuple(x_cpu.shape[1:])} but {c}.npy in `data_dir` "
                                         f"holds {tuple(corrupted.shape[1:])}")
                noise[start:stop] = corrupted - clean[start:stop]
                for ev in evaluators:
                    ev.add((c, s), corrupted, start)
            magnitude[(c, s)] = rfft2(noise).abs().double().sum(dim=(0, 1))
            esd[(c, s)] = energy_spectral_density(noise).double().sum(dim=(0, 1))
            del noise
        for ev in evaluators:
            ev.flush()
    return {"correct": [dict(ev.correct) for ev in evaluators], "magnitude": magnitude, "esd": esd}


class _Evaluator:
    """Counts correct predictions per key, forwarding images in batches of ``batch_size`` across keys (a few
    images per corruption still make full batches)."""

    def __init__(self, model, y: torch.Tensor, batch_size: int, device, name: str):
        self.model, self.y, self.batch_size, self.name = model, y, batch_size, name
        self.device, _ = model_device_dtype(model) if device is None else (torch.device(device), None)
        _, self.dtype = model_device_dtype(model)
        self.pending: List[Tuple[Any, torch.Tensor, torch.Tensor]] = []
        self.size = 0
        self.correct: Dict[Any, int] = {}
        self.num_classes: Optional[int] = None

    def check_first(self, example: torch.Tensor) -> None:
        self.num_classes = num_classes_of(self.model, example.to(self.device, self.dtype), labels=self.y,
                                          labels_name="y", name=self.name)

    def add(self, key, images: torch.Tensor, start: int) -> None:
        for offset in range(0, images.shape[0], self.batch_size):
            part = images[offset:offset + self.batch_size]
            labels = self.y[start + offset:start + offset + part.shape[0]]
            self.pending.append((key, part, labels))
            self.size += part.shape[0]
            while self.size >= self.batch_size:
                self._forward(self.batch_size)

    def flush(self) -> None:
        while self.size:
            self._forward(self.size)

    def _forward(self, take: int) -> None:
        keys, images, labels, taken = [], [], [], 0
        while taken < take:
            key, part, lab = self.pending[0]
            use = min(part.shape[0], take - taken)
            keys.append((key, use))
            images.append(part[:use])
            labels.append(lab[:use])
            if use == part.shape[0]:
                self.pending.pop(0)
            else:
                self.pending[0] = (key, part[use:], lab[use:])
            taken += use
        self.size -= taken
        batch = torch.cat(images).to(self.device, self.dtype)
        logits = check_logits(self.model(batch), self.model, batch_size=batch.shape[0], name=self.name)
        hits = (logits.argmax(dim=1).cpu() == torch.cat(labels)).long()
        offset = 0
        for key, use in keys:
            self.correct[key] = self.correct.get(key, 0) + int(hits[offset:offset + use].sum())
            offset += use
