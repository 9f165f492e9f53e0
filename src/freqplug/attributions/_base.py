"""FrequencyAttribution: what every frequency attribution class shares.

A frequency attribution explains ``forward_func`` on images by removing groups of frequency
bins (the *players*) and filling them from a baseline. The subclasses differ in the transform
(DFT for FrequencyShapley (Chen2022) and SpectralBandShapley (Luo2024), DCT for
OccludedFrequency (Wang2020a)) and in how they turn coalition values into scores; everything
around that lives here, once:

* argument checks: ``forward_func`` (:func:`~freqplug._validation.check_callable`), images,
  ``seed`` (:func:`~freqplug._validation.check_seed`);
* Captum's tensor-or-tuple inputs (:meth:`_format_inputs` / :meth:`_format_output`);
* one baseline vocabulary (:meth:`baseline_images`);
* one target validation (:func:`~freqplug.attributions._captum.validate_target` up front,
  :func:`~freqplug.attributions._captum.check_target_range` on every forward call);
* the row runner (:meth:`_run_rows`): rows of several images and coalitions in one forward
  call, each row with its example's target and tensor arguments, non-finite outputs refused;
* the cost announcement (:meth:`_start`): evaluations counted up front, logged, refused above
  ``max_evaluations``, and shown as the progress bar's total.

Conventions every subclass follows
----------------------------------
``seed``
    Default ``0``: the same call gives the same result. ``None`` draws a fresh seed from the
    operating system (never from, nor advancing, torch's global RNG). Floats and bools are refused.
``noise_std``
    Default ``1.0``: pixel standard deviation of the ``"gaussian"`` baseline (white noise; in
    orthonormal DFT/DCT units every coefficient then has variance ``noise_std**2``, Luo2024
    App. B.2's "standard complex Gaussian").
``baselines``
    ``None``, ``0``, ``0.0`` or ``"zero"``: absent coefficients are 0 (Captum's default);
    ``"gaussian"``: white noise of std ``noise_std``, one draw per image from
    ``image_generator(seed, dataset_index)``; ``"replacement"``: another image of the same call,
    the partner drawn from that same per-image generator among the other images taken in
    dataset order (needs 2 images); a tensor (N or 1, C, H, W): these images. Any other scalar
    is refused. A baseline never depends on the image's position in the batch or on chunking.
``perturbations_per_eval``
    Captum's meaning: each forward call holds at most ``perturbations_per_eval x N`` rows.
``inputs`` range
    Images in [0, 1], with a tolerance of :data:`INPUT_RANGE_TOLERANCE` (0.5). The tolerance is
    there for ``captum.attr.NoiseTunnel`` and ``captum.metrics.sensitivity_max``, which add
    noise to the inputs: the Fourier/DCT decomposition is linear and valid for any real image,
    so noisy inputs are explained exactly as given (clamping them would change what is explained
    and bias the noise). The check still refuses the usual mistakes: 0-255 images and
    mean/std-normalized images (about [-2.1, 2.6]).
Cost
    ``max_evaluations`` (default :data:`~freqplug._validation.DEFAULT_MAX_EVALUATIONS`) refuses
    larger budgets before anything is allocated; the count is logged at INFO level and is the
    total of the progress bar, which counts evaluations (masked images), not forward calls.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Callable, Optional, Tuple

import torch
from captum.attr._utils.attribution import PerturbationAttribution

from .._batches import image_generator
from .._validation import check_budget, check_callable, check_images, check_number, check_seed
from ..spectral import Players
from ._captum import (
    NullProgress,
    TargetType,
    check_target_range,
    format_forward_args,
    format_inputs,
    progress,
    rows_forward_args,
    rows_target,
    select_targets,
    validate_target,
)

logger = logging.getLogger("freqplug.attributions")

#: How far outside [0, 1] input values may lie (see the module docstring: NoiseTunnel, sensitivity_max).
INPUT_RANGE_TOLERANCE = 0.5

#: The baseline strings every frequency attribution class accepts.
BASELINES = ("zero", "gaussian", "replacement")

DEFAULT_SEED = 0
DEFAULT_NOISE_STD = 1.0


class FrequencyAttribution(PerturbationAttribution):
    """Base class of the frequency attribution methods (Captum ``PerturbationAttribution``).

    Subclasses implement :meth:`players` (the partition for an image size), ``attribute`` (decorated
    with ``captum.log.log_usage()`` so ``captum.attr.NoiseTunnel`` can wrap it) and
    :meth:`player_values`. See the module docstring for the conventions they share.

    Args:
        forward_func: callable mapping images (B, C, H, W) (plus ``additional_forward_args``) to
            outputs (B, ...) (e.g. logits (B, K)); never modified, called in the mode it is in.
    """

    def __init__(self, forward_func: Callable) -> None:
        check_callable(forward_func, "forward_func")
        PerturbationAttribution.__init__(self, forward_func)

    # ------------------------------------------------------------------ hooks for subclasses
    def players(self, height: int, width: int) -> Players:
        """The partition of (height, width) frequency bins into players."""
        raise NotImplementedError

    def player_values(self, inputs: torch.Tensor, baselines: Any = None, target: TargetType = None,
                      additional_forward_args: Any = None, **kwargs) -> torch.Tensor:
        """Per-player values (N, P) in the inputs' dtype; ``attribute`` spreads them over each player's bins."""
        raise NotImplementedError

    # ------------------------------------------------------------------ argument handling
    @staticmethod
    def _format_inputs(inputs: Any, name: str = "inputs") -> Tuple[torch.Tensor, bool]:
        """(images, was_tuple): accepts a tensor (N, C, H, W) or Captum's 1-tuple ``(tensor,)``."""
        is_tuple = isinstance(inputs, tuple)
        if is_tuple:
            if len(inputs) != 1:
                raise ValueError(f"`{name}` tuple must hold exactly one image tensor (N, C, H, W), "
                                 f"got {len(inputs)} entries")
            inputs = format_inputs(inputs)[0]
        if not isinstance(inputs, torch.Tensor):
            raise TypeError(f"`{name}` must be a tensor (N, C, H, W) or a 1-tuple of one, got {type(inputs).__name__}")
        check_images(inputs, name, tolerance=INPUT_RANGE_TOLERANCE)
        return inputs, is_tuple

    @staticmethod
    def _format_output(output: torch.Tensor, is_tuple: bool):
        return (output,) if is_tuple else output

    @staticmethod
    def _resolve_seed(seed: Any) -> int:
        """The seed to use: ``seed`` checked, or a fresh one from the OS when None (global RNG untouched)."""
        seed = check_seed(seed, "seed")
        if seed is None:
            seed = random.SystemRandom().randrange(2**62)
        return seed

    @staticmethod
    def _check_first_index(first_index: Any) -> int:
        """``first_index``, the dataset index of ``inputs[0]`` (per-image baselines are keyed on it), checked."""
        if isinstance(first_index, bool) or not isinstance(first_index, int) or first_index < 0:
            raise ValueError(f"`first_index` must be a non-negative int (the dataset index of inputs[0]), "
                             f"got {first_index!r}")
        return first_index

    @staticmethod
    def _prepare_target(target: TargetType, batch_size: int) -> TargetType:
        return validate_target(target, batch_size, "target")

    @staticmethod
    def _prepare_forward_args(additional_forward_args: Any, batch_size: int) -> Optional[Tuple]:
        args = format_forward_args(additional_forward_args)
        # refuse a wrong batch dimension before any model call (the same message as the row runner)
        for position, arg in enumerate(args or ()):
            if isinstance(arg, torch.Tensor) and arg.dim() > 0 and arg.shape[0] != batch_size:
                raise ValueError(
                    f"tensor {position} of `additional_forward_args` has first dimension {arg.shape[0]}, expected "
                    f"the batch size {batch_size} (tensor arguments are per-example, as in Captum; wrap other "
                    "tensors in the forward function)"
                )
        return args

    def baseline_images(self, inputs: torch.Tensor, baselines: Any, *, seed: int,
                        noise_std: float = DEFAULT_NOISE_STD,
                        dataset_index: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """The images whose coefficients fill absent bins, in pixel space (transform-independent).

        Args:
            inputs: images (N, C, H, W).
            baselines: see the module docstring; also Captum's 1-tuple ``(baselines,)``.
            seed: the call's seed (already resolved).
            noise_std: pixel std of the ``"gaussian"`` baseline.
            dataset_index: (N,) index of each image in its dataset (default ``arange(N)``); keys the
                per-image generator, so draws do not depend on batching or position.

        Returns:
            None for the zero baseline, else (N or 1, C, H, W) in the inputs' dtype and device.
        """
        n, c, h, w = inputs.shape
        if isinstance(baselines, tuple):
            if len(baselines) != 1:
                raise ValueError(f"`baselines` tuple must hold one entry (like `inputs`), got {len(baselines)}")
            baselines = baselines[0]
        if baselines is None:
            return None
        if isinstance(baselines, bool):
            raise TypeError("`baselines` must be None, 0, 'zero', 'gaussian', 'replacement' or images, got a bool")
        if isinstance(baselines, (int, float)):
            if baselines == 0:
                return None
            raise ValueError(
                f"`baselines` scalar must be 0 (absent coefficients are zero), got {baselines}; a constant "
                "image is a tensor baseline (e.g. torch.full_like(inputs, value))"
            )
        if dataset_index is None:
            dataset_index = torch.arange(n)
        dataset_index = torch.as_tensor(dataset_index).reshape(-1).cpu()
        if dataset_index.numel() != n:
            raise ValueError(f"`dataset_index` must have one entry per image ({n}), got {dataset_index.numel()}")
        if isinstance(baselines, str):
            if baselines not in BASELINES:
                raise ValueError(f"`baselines` must be one of {list(BASELINES)}, 0/None or images, got {baselines!r}")
            if baselines == "zero":
                return None
            if baselines == "gaussian":
                check_number(noise_std, "noise_std", minimum=0.0)
                # float64 draw cast to the inputs' dtype: the same baseline whatever the dtype
                noise = torch.stack([torch.randn((c, h, w), generator=image_generator(seed, int(i)),
                                                 dtype=torch.float64) for i in dataset_index.tolist()])
                return (noise * noise_std).to(device=inputs.device, dtype=inputs.dtype)
            if n < 2:
                raise ValueError("`baselines`='replacement' fills each image's absent bins from another image of the "
                                 f"same call and needs at least 2 images, got {n}")
            order = torch.argsort(dataset_index, stable=True)  # positions in dataset order
            partner = torch.empty(n, dtype=torch.long)
            for position in range(n):
                others = order[order != position]
                pick = torch.randint(0, n - 1, (1,), generator=image_generator(seed, int(dataset_index[position])))
                partner[position] = others[int(pick)]
            return inputs.detach()[partner.to(inputs.device)]
        if not isinstance(baselines, torch.Tensor):
            raise TypeError("`baselines` must be None, 0, 'zero', 'gaussian', 'replacement' or a tensor of images, "
                            f"got {type(baselines).__name__}")
        if not baselines.dtype.is_floating_point:
            raise TypeError(f"`baselines` images must be a floating tensor, got dtype {baselines.dtype}")
        if baselines.dim() != 4 or tuple(baselines.shape[1:]) != (c, h, w) or baselines.shape[0] not in (1, n):
            raise ValueError(f"`baselines` images must have shape ({n} or 1, {c}, {h}, {w}) to match `inputs`, "
                             f"got {tuple(baselines.shape)}")
        if not bool(torch.isfinite(baselines).all()):
            raise ValueError("`baselines` must be finite (no NaN or inf)")
        return baselines.detach().to(device=inputs.device, dtype=inputs.dtype)

    # ------------------------------------------------------------------ cost
    def _start(self, num_evaluations: int, max_evaluations: Optional[float], *, show_progress: bool,
               what: Optional[str] = None, hint: str = ""):
        """Check the budget, log the evaluation count and return the progress bar (counts evaluations)."""
        what = what or f"{self.get_name()}.attribute"
        check_budget(num_evaluations, max_evaluations, what, hint)
        logger.info("%s: %s model evaluations", what, f"{num_evaluations:,}")
        if show_progress:
            return progress(desc=f"{self.get_name()} attribution", total=num_evaluations)
        return NullProgress()

    # ------------------------------------------------------------------ the row runner
    def _coalition_values(self, render: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], num_coalitions: int,
                          batch_size: int, perturbations_per_eval: int, target: TargetType,
                          additional_forward_args: Optional[Tuple], bar, device=None) -> torch.Tensor:
        """The target-selected output of every image on every coalition, Captum's chunking.

        Each forward call holds ``k <= perturbations_per_eval`` coalitions of all N images, coalition-major
        (rows ``c * N + i``), so the first call already covers every image (targets and finiteness are
        checked for all examples before most of the budget is spent).

        Args:
            render: ``render(coalition_ids (k,), image_index (k*N,))`` -> perturbed images (k*N, C, H, W),
                row r showing image ``image_index[r]`` under coalition ``coalition_ids[r // N]``.
            num_coalitions: K, coalitions per image.
            batch_size: N.
            perturbations_per_eval: coalitions per call (Captum's meaning).
            target, additional_forward_args: from :meth:`_prepare_target` / :meth:`_prepare_forward_args`.
            bar: progress bar from :meth:`_start`; advanced by the evaluations of each call.
            device: where ``coalition_ids``/``image_index`` live.

        Returns:
            (N, K) float64 values.
        """
        n = batch_size
        values = torch.empty(n, num_coalitions, dtype=torch.float64, device=device)
        all_images = torch.arange(n, device=device)
        for start in range(0, num_coalitions, perturbations_per_eval):
            coalition_ids = torch.arange(start, min(start + perturbations_per_eval, num_coalitions), device=device)
            k = coalition_ids.numel()
            image_index = all_images.repeat(k)
            with torch.no_grad():  # perturbation methods need no graph; the caller's grad mode is restored after
                images = render(coalition_ids, image_index)
                out = self._run_rows(images, image_index, target, additional_forward_args, n)
            values[:, start:start + k] = out.to(values.device).reshape(k, n).T
            bar.update(k * n)
        return values

    def _run_rows(self, images: torch.Tensor, image_index: torch.Tensor, target: TargetType,
                  additional_forward_args: Optional[Tuple], batch_size: int) -> torch.Tensor:
        """Forward rows of several images at once and select each row's target.

        Args:
            images: (R, C, H, W) perturbed images.
            image_index: (R,) the example each row belongs to (indexes ``target`` and tensor args).
            target: a target from :meth:`_prepare_target` (per example).
            additional_forward_args: from :meth:`_prepare_forward_args`.
            batch_size: N, the number of examples.

        Returns:
            (R,) float64 target-selected outputs.

        Raises:
            ValueError: non-finite outputs (naming the forward function), targets past the output
                width, or an output that is not one value per row after target selection.
        """
        args = rows_forward_args(additional_forward_args, image_index, batch_size)
        output = self.forward_func(images, *(args or ()))
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"`forward_func` must return a tensor, got {type(output).__name__}")
        output = output.detach()
        if output.dim() == 0 or output.shape[0] != images.shape[0]:
            raise ValueError(
                f"`forward_func` must return one output per image: got shape {tuple(output.shape)} for "
                f"{images.shape[0]} images (forward functions that return one scalar per batch are not supported)"
            )
        if not bool(torch.isfinite(output).all()):
            bad = int((~torch.isfinite(output)).sum())
            raise ValueError(
                f"`forward_func` ({_describe(self.forward_func)}) returned {bad} non-finite value(s) (NaN or inf) "
                "on masked images; attributions of a non-finite output are meaningless"
            )
        check_target_range(output, target, "target")
        selected = select_targets(output, rows_target(target, image_index))
        if selected.numel() != images.shape[0]:
            raise ValueError(
                f"the forward output must give one value per example after `target` selection; got shape "
                f"{tuple(selected.shape)} from output {tuple(output.shape)} for {images.shape[0]} images "
                "(pass `target` for a multi-output model)"
            )
        return selected.reshape(-1).to(torch.float64)


def _describe(forward_func: Callable) -> str:
    name = getattr(forward_func, "__qualname__", None) or type(forward_func).__name__
    return name
