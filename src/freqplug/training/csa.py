"""Class-wise Shapley value-guided Augmentation (CSA, Chen2022 §5, eq. 13-14).

Two pieces:

* :class:`CSABank`: for each class, the NFC images of a few training images, i.e. the
  real inverse DFT of the frequency components whose Shapley value (for the softmax
  probability of the true class under a pretrained model) is negative (eq. 13). Built in
  three steps (:func:`select_per_class`, :func:`attribute_images`, :func:`assemble_bank`;
  :meth:`CSABank.build` runs them), with a progress bar, resumable from a checkpoint file,
  saved and loaded with the settings it was built with.
* :class:`CSAugment`: the training-time hook ``x_aug = clamp(x + alpha * s * p, 0, 1)``
  with p an NFC image of the sample's own class (eq. 14; IDFT(DFT(x) + a p) = x + a IDFT(p)).

How the authors plug the augmentation into adversarial training:

* PGD-AT: the attack runs on the augmented image, ``x_adv = PGD(model, aug(x, y, epoch))``
  (the eps-ball is around the augmented image), and the model trains on ``x_adv``.
* TRADES: the augmented image only moves the PGD starting point; the eps-ball projection
  and the natural (clean) term stay around the clean x.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Union

import torch
from torch import nn

from .._batches import image_generator, iter_labelled_batches
from .._io import atomic_save, digest, model_digest, safe_load
from .._model import check_logits, model_device_dtype, num_classes_of, preserved_model_state
from .._validation import (
    check_budget,
    check_callable,
    check_choice,
    check_images,
    check_labels,
    check_number,
    check_positive_int,
    check_seed,
)
from .._version import __version__
from ..attributions._estimators import ESTIMATORS, default_n_samples, design_size
from ..attributions.frequency_shapley import (
    FrequencyShapley,
    negative_frequency_mask,
    reconstruct_from_mask,
    sign_determined,
)
from ..spectral import Players, make_players

__all__ = ["CSABank", "CSAugment", "assemble_bank", "attribute_images", "nfc_images", "select_per_class"]

logger = logging.getLogger("freqplug")

#: What the file header says; load() refuses anything else.
FILE_FORMAT = "freqplug.CSABank"
CHECKPOINT_FORMAT = "freqplug.CSABank.checkpoint"
FILE_FORMAT_VERSION = 1

#: CSA's estimator (antithetic permutations: exact for the order <= 2 interactions frequency games nearly have).
DEFAULT_ESTIMATOR = "antithetic"
#: Samples per round of the adaptive build: permutations (permutation, antithetic), coalitions (owen);
#: ``kernel`` uses 8 coalitions per player, ``tree`` 10 (P - 1) coalitions (the registry's defaults).
ROUND_SAMPLES = 10
#: Cap of the adaptive build: at most this many rounds of ROUND_SAMPLES per image.
DEFAULT_MAX_ROUNDS = 8
#: The adaptive build stops an image once at most this fraction of its players is undetermined.
DEFAULT_SIGN_TOLERANCE = 0.25
#: A bank whose images have on average more undetermined players than this is warned about.
UNDETERMINED_WARNING = 0.5
#: Masked images per forward call of the default attribution.
DEFAULT_ROWS_PER_CALL = 128

#: attribution(inputs (n, C, H, W), target (n,)) -> Shapley map (n, H, W) in fft2 layout.
Attribution = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------- step 1: selection
def select_per_class(labels: torch.Tensor, per_class: int, classes: Optional[Iterable[int]] = None) -> torch.Tensor:
    """Indices (M,) of the first ``per_class`` images of every class, in dataset order (the
    authors took "the first 150 images without shuffling"), grouped by class.

    Args:
        labels: (N,) class indices.
        per_class: images per class; a class with fewer images gives all of them.
        classes: which classes (default: every label present); a class without images raises.

    Returns:
        (M,) long CPU indices into ``labels``.
    """
    check_labels(labels, "labels", labels.shape[0] if isinstance(labels, torch.Tensor) else 0)
    per_class = check_positive_int(per_class, "per_class")
    labels = labels.detach().cpu()
    wanted = sorted({int(c) for c in (classes if classes is not None else labels.unique().tolist())})
    chosen = []
    for c in wanted:
        idx = (labels == c).nonzero().flatten()[:per_class]
        if idx.numel() == 0:
            raise ValueError(f"`classes`: class {c} has no images in `labels`; cannot build its NFC set")
        chosen.append(idx)
    if not chosen:
        raise ValueError("`labels` is empty: no class to build an NFC set for")
    return torch.cat(chosen)


# ---------------------------------------------------------------------- step 2: attribution
def combine_estimates(first, second):
    """Pool two independent Shapley estimates ``(values (P,), stderr (P,), num_samples)`` of one image.

    The pooled value is the sample-weighted mean, so it stays efficient (each estimate sums to
    v(all) - v(empty)); its standard error is that of the weighted mean of independent estimates.
    """
    v1, s1, n1 = first
    v2, s2, n2 = second
    total = n1 + n2
    values = (n1 * v1 + n2 * v2) / total
    stderr = torch.sqrt((n1 * s1) ** 2 + (n2 * s2) ** 2) / total
    return values, stderr, total


def undetermined_fraction(values: torch.Tensor, stderr: torch.Tensor) -> torch.Tensor:
    """Fraction (...,) of players whose sign is undetermined: not ``|phi| > 2 stderr`` (or stderr NaN); the
    rule of :func:`freqplug.attributions.frequency_shapley.sign_determined` (``result.sign_determined``)."""
    return (~sign_determined(values, stderr)).double().mean(dim=-1)


def evaluations_per_run(estimator: str, num_players: int, n_samples: int) -> int:
    """Model evaluations (masked images) of one FrequencyShapley run on one image (the estimator registry's
    :func:`~freqplug.attributions._estimators.design_size`)."""
    return design_size(estimator, num_players, n_samples)


def image_seed(seed: int, index: int, round_index: int = 0) -> int:
    """Seed of round ``round_index`` of image ``index`` (its position in the build's ``inputs``):
    an image's attribution does not depend on batching, on ``per_class`` or on a resume."""
    return image_generator(image_generator(seed, index).initial_seed(), round_index).initial_seed()


@dataclass
class ImageAttributions:
    """What :func:`attribute_images` measured.

    Attributes:
        shapley_maps: (M, H, W) Shapley value of every bin (fft2 layout; DC 0).
        values: (M, P) per-player Shapley values (float64), or None for a custom attribution.
        stderr: (M, P) their standard errors, or None.
        samples: (M,) long, samples spent per image (0 for a custom attribution).
        n_evaluations: model evaluations spent by this call (resumed images excluded).
    """

    shapley_maps: torch.Tensor
    values: Optional[torch.Tensor]
    stderr: Optional[torch.Tensor]
    samples: torch.Tensor
    n_evaluations: int


class _CSAGame:
    """The authors' game, one image at a time: FrequencyShapley of the softmax probability of the true
    class, in rounds of ``n_samples`` until the signs are determined (or ``max_rounds``)."""

    def __init__(self, model: nn.Module, players: Players, estimator: str, n_samples: int, max_rounds: int,
                 sign_tolerance: float, rows_per_call: int, seed: int):
        self.model, self.players, self.estimator = model, players, estimator
        self.n_samples, self.max_rounds, self.sign_tolerance = n_samples, max_rounds, sign_tolerance
        self.rows_per_call, self.seed = rows_per_call, seed
        self.explainer = FrequencyShapley(self._probability)
        self.n_evaluations = 0

    def _probability(self, z: torch.Tensor) -> torch.Tensor:
        # every chunk checked: a NaN logit would otherwise become a NaN (or arbitrary) sign
        logits = check_logits(self.model(z), self.model, batch_size=z.shape[0])
        return torch.softmax(logits, dim=1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor):
        values, stderr, samples = [], [], []
        for i in range(x.shape[0]):
            estimate = None
            for round_index in range(self.max_rounds):
                # one image per call: perturbations_per_eval then bounds the rows of every forward call under
                # both its old (rows per call) and Captum's (rows per example) meaning
                result = self.explainer.attribute(
                    inputs=x[i:i + 1], target=y[i:i + 1], n_samples=self.n_samples,
                    perturbations_per_eval=self.rows_per_call, show_progress=False, players=self.players,
                    estimator=self.estimator, seed=image_seed(self.seed, int(index[i]), round_index),
                    return_result=True)
                self.n_evaluations += int(result.n_evaluations)
                new = (result.values[0].detach().double().cpu(), result.stderr[0].detach().double().cpu(),
                       int(result.num_samples))
                estimate = new if estimate is None else combine_estimates(estimate, new)
                if float(undetermined_fraction(estimate[0], estimate[1])) <= self.sign_tolerance:
                    break
            values.append(estimate[0])
            stderr.append(estimate[1])
            samples.append((round_index + 1) * self.n_samples)
        values, stderr = torch.stack(values), torch.stack(stderr)
        return self.players.expand(values), values, stderr, torch.tensor(samples, dtype=torch.long)


def attribute_images(model: Optional[nn.Module], inputs: torch.Tensor, labels: torch.Tensor,
                     indices: Optional[torch.Tensor] = None, *, players=16, estimator: str = DEFAULT_ESTIMATOR,
                     n_samples: Optional[int] = None, max_rounds: Optional[int] = None,
                     sign_tolerance: float = DEFAULT_SIGN_TOLERANCE, perturbations_per_eval: Optional[int] = None,
                     seed: int = 0, batch_size: int = 16, attribution: Optional[Attribution] = None,
                     checkpoint: Optional[PathLike] = None, fingerprint: str = "",
                     max_evaluations: Optional[float] = None, show_progress: bool = True) -> ImageAttributions:
    """Step 2 of a CSA build: the Shapley map of every image (Chen2022 eq. 5-9 and §5's game).

    The default game is the softmax probability of the true class (the authors' code) under
    FrequencyShapley with a zero baseline. Each image is attributed on its own with seeds
    :func:`image_seed` ``(seed, indices[i], round)``, in rounds of ``n_samples`` samples; after each
    round the estimates are pooled (:func:`combine_estimates`) and the image stops once at most
    ``sign_tolerance`` of its players are undetermined (``|phi| < 2 stderr``) or after
    ``max_rounds`` rounds.

    Args:
        model: classifier (logits (B, K)), in eval mode during the call and restored afterwards.
        inputs: images (M, C, H, W) in [0, 1]. labels: (M,) class indices (checked against K).
        indices: (M,) dataset index of every image (seeds its randomness); default ``arange(M)``.
        players, estimator: FrequencyShapley's partition and estimator (one of
            ``freqplug.attributions._estimators.ESTIMATORS``).
        n_samples: samples per round (default :data:`ROUND_SAMPLES`; ``kernel``: 8 per player; ``tree``:
            10 (P - 1) coalitions).
        max_rounds: rounds cap; default :data:`DEFAULT_MAX_ROUNDS` when ``n_samples`` is None, else 1
            (a given ``n_samples`` is a fixed budget, as before).
        sign_tolerance: stop an image once at most this fraction of its players is undetermined.
        perturbations_per_eval: masked images per forward call (default 128); each FrequencyShapley
            call holds one image, so this is also Captum's per-example meaning.
        seed: base seed. batch_size: images per chunk (the checkpoint unit).
        attribution: replaces the default game: ``attribution(inputs (n, C, H, W), target (n,)) ->
            (n, H, W)`` Shapley map; no standard errors then (no stop rule, no sign warning).
        checkpoint: resumable build (see :meth:`CSABank.build`); its key covers the images, labels, indices,
            settings, partition and model weights of this call. fingerprint: extra key material (the build's).
        max_evaluations: refuse a build whose worst case exceeds this many model evaluations
            (default ``freqplug._validation.DEFAULT_MAX_EVALUATIONS``; ``float("inf")`` for no limit).
        show_progress: tqdm bar over images.

    Returns:
        :class:`ImageAttributions`.

    Model evaluations: at most ``M * max_rounds * K`` with ``K = 2 + n_samples * (P - 1)`` per round
    (antithetic/permutation), logged up front and checked against ``max_evaluations``.
    """
    check_images(inputs, "inputs")
    m, c, h, w = inputs.shape
    check_labels(labels, "labels", m)
    indices = torch.arange(m) if indices is None else indices.detach().cpu().long()
    if tuple(indices.shape) != (m,):
        raise ValueError(f"`indices` must have shape ({m},), got {tuple(indices.shape)}")
    batch_size = check_positive_int(batch_size, "batch_size")
    seed = check_seed(seed, allow_none=False)
    sign_tolerance = check_number(sign_tolerance, "sign_tolerance", minimum=0.0, maximum=1.0)
    game = None
    if attribution is None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
        check_choice(estimator, "estimator", ESTIMATORS)
        resolved = players if isinstance(players, Players) else make_players(players, h, w, require_fixed_dc=True)
        num_players = resolved.num_players
        fixed = n_samples is not None
        if n_samples is None:
            n_samples = _round_default(estimator, num_players)
        n_samples = check_positive_int(n_samples, "n_samples")
        max_rounds = (1 if fixed else DEFAULT_MAX_ROUNDS) if max_rounds is None else \
            check_positive_int(max_rounds, "max_rounds")
        rows = DEFAULT_ROWS_PER_CALL if perturbations_per_eval is None else \
            check_positive_int(perturbations_per_eval, "perturbations_per_eval")
        per_round = evaluations_per_run(estimator, num_players, n_samples)
        worst = m * max_rounds * per_round
        check_budget(worst, max_evaluations, "this CSA bank build",
                     hint="lower per_class, n_samples or max_rounds, or use a coarser `players`")
        logger.info("CSA bank: %d images, %d players, %d to %d model evaluations (%d per round of %d %s samples)",
                    m, num_players, m * per_round, worst, per_round, n_samples, estimator)
        game = _CSAGame(model, resolved, estimator, n_samples, max_rounds, sign_tolerance, rows, seed)
    else:
        check_callable(attribution, "attribution")

    # the checkpoint key always covers what this call computes from, whatever the caller passed as `fingerprint`
    fingerprint = digest(
        fingerprint, inputs.detach(), labels.detach().cpu(), indices,
        {"estimator": estimator, "n_samples": n_samples, "max_rounds": max_rounds, "sign_tolerance": sign_tolerance,
         "seed": seed, "batch_size": batch_size, "perturbations_per_eval": perturbations_per_eval,
         "attribution": None if attribution is None else getattr(attribution, "__qualname__", repr(attribution))},
        game.players.player_map if game is not None else "custom attribution",
        model_digest(model) if isinstance(model, nn.Module) else "no model")
    maps: List[torch.Tensor] = []
    values: List[torch.Tensor] = []
    stderr: List[torch.Tensor] = []
    samples: List[torch.Tensor] = []
    checkpoint_path = None if checkpoint is None else Path(checkpoint)
    if checkpoint_path is not None and checkpoint_path.exists():
        state = safe_load(checkpoint_path, "CSABank checkpoint")
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"`checkpoint` file {str(checkpoint_path)!r} is not a CSABank build checkpoint")
        if state.get("fingerprint") != fingerprint:
            raise ValueError(
                f"`checkpoint` file {str(checkpoint_path)!r} was written by a build with different inputs or "
                "settings (model weights, images, labels, per_class, players, estimator, n_samples, seed, "
                "batch_size); delete it or pass the same arguments to resume"
            )
        done = state.get("shapley_maps")
        if not isinstance(done, torch.Tensor) or tuple(done.shape[1:]) != (h, w) or done.shape[0] > m:
            raise ValueError(f"`checkpoint` file {str(checkpoint_path)!r} is inconsistent; delete it to rebuild")
        maps.append(done)
        samples.append(state["samples"])
        if state.get("values") is not None:
            values.append(state["values"])
            stderr.append(state["stderr"])
    start = sum(t.shape[0] for t in maps)

    device = model_device_dtype(model, default_device=inputs.device)[0] if isinstance(model, nn.Module) \
        else inputs.device
    if isinstance(model, nn.Module) and start < m:
        # labels against the output width, once, on one image (the games below only see probabilities)
        num_classes_of(model, inputs[start:start + 1].to(device), labels=labels, labels_name="labels")
    progress = None
    if show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=m, initial=start, desc="CSA bank (frequency Shapley)", unit="img")
    try:
        with preserved_model_state(model, eval_mode=True), torch.no_grad():
            for chunk_start in range(start, m, batch_size):
                xb = inputs[chunk_start:chunk_start + batch_size].detach().to(device)
                yb = labels[chunk_start:chunk_start + batch_size].to(device)
                if game is not None:
                    phi, v, s, k = game(xb, yb, indices[chunk_start:chunk_start + batch_size])
                    values.append(v)
                    stderr.append(s)
                else:
                    phi, k = attribution(xb, yb), torch.zeros(xb.shape[0], dtype=torch.long)
                    _check_shapley_map(phi, xb)
                maps.append(phi.detach().to("cpu", torch.float64))
                samples.append(k)
                if checkpoint_path is not None:
                    atomic_save({"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint,
                                 "shapley_maps": torch.cat(maps), "samples": torch.cat(samples),
                                 "values": torch.cat(values) if values else None,
                                 "stderr": torch.cat(stderr) if stderr else None}, checkpoint_path)
                if progress is not None:
                    progress.update(xb.shape[0])
    finally:
        if progress is not None:
            progress.close()
    return ImageAttributions(
        shapley_maps=torch.cat(maps),
        values=torch.cat(values) if values else None,
        stderr=torch.cat(stderr) if stderr else None,
        samples=torch.cat(samples),
        n_evaluations=0 if game is None else game.n_evaluations,
    )


def _check_shapley_map(shapley_map, x: torch.Tensor) -> None:
    n, _, h, w = x.shape
    if not isinstance(shapley_map, torch.Tensor) or tuple(shapley_map.shape) != (n, h, w):
        got = tuple(shapley_map.shape) if isinstance(shapley_map, torch.Tensor) else type(shapley_map).__name__
        raise ValueError(f"`attribution` must return a Shapley map of shape {(n, h, w)}, got {got}")
    if not shapley_map.dtype.is_floating_point or not bool(torch.isfinite(shapley_map).all()):
        raise ValueError("`attribution` returned a Shapley map that is not finite floating point")


def nfc_images(x: torch.Tensor, shapley_map: torch.Tensor) -> torch.Tensor:
    """NFC images (Chen2022 eq. 13): ``IDFT( 1[phi < 0] * DFT(x) )`` with DC excluded.

    Args:
        x: images (N, C, H, W).
        shapley_map: (N, H, W) Shapley value per bin in ``torch.fft.fft2`` layout (each bin
            carries its player's value; conjugate-symmetric because players are conjugate-closed).

    Returns:
        (N, C, H, W) real, signed, unclipped images in ``x.dtype``.
    """
    if not isinstance(shapley_map, torch.Tensor) or shapley_map.dim() != 3:
        raise ValueError(
            "`shapley_map` must be a Shapley map of shape (N, H, W), got "
            f"{tuple(shapley_map.shape) if isinstance(shapley_map, torch.Tensor) else type(shapley_map).__name__}"
        )
    n, c, h, w = x.shape
    if tuple(shapley_map.shape) != (n, h, w):
        raise ValueError(f"`shapley_map` must be a Shapley map of shape {(n, h, w)}, got {tuple(shapley_map.shape)}")
    # DC is excluded: it is always present in the game, never a player
    return reconstruct_from_mask(x, negative_frequency_mask(shapley_map.detach()).to(x.device), include_dc=False)


# ---------------------------------------------------------------------- step 3: the bank
def assemble_bank(inputs: torch.Tensor, labels: torch.Tensor, attributions: ImageAttributions, settings: dict,
                  player_map: Optional[torch.Tensor] = None) -> "CSABank":
    """Step 3 of a CSA build: NFC images (eq. 13) from the maps, the sign statistics in the settings,
    and a warning when the signs are mostly undetermined.

    Args:
        inputs: the attributed images (M, C, H, W); labels: (M,).
        attributions: what :func:`attribute_images` returned for them.
        settings: how the bank was built (recorded as they are, plus ``undetermined_fraction``,
            the mean over images of the fraction of players with |phi| < 2 stderr, and
            ``mean_samples``).
        player_map: (H, W) partition, recorded.

    Returns:
        :class:`CSABank`.
    """
    maps = attributions.shapley_maps
    if maps.shape[0] != inputs.shape[0]:
        raise ValueError(f"`attributions` holds {maps.shape[0]} maps for {inputs.shape[0]} `inputs`")
    nfc = nfc_images(inputs.detach().cpu().double(), maps.cpu().double()).to(torch.float32)
    settings = dict(settings)
    settings["mean_samples"] = float(attributions.samples.double().mean())
    undetermined = None
    if attributions.values is not None:
        undetermined = float(undetermined_fraction(attributions.values, attributions.stderr).mean())
    settings["undetermined_fraction"] = undetermined
    if undetermined is not None and undetermined > UNDETERMINED_WARNING:
        warnings.warn(
            f"CSA bank: on average {undetermined:.0%} of the players of an image have |phi| < 2 stderr, so "
            "their signs (and the NFC masks) are mostly noise; raise n_samples/max_rounds or use a coarser "
            "`players` (Chen2022 used 2,000 permutations)", UserWarning, stacklevel=3)
    return CSABank(nfc, labels.detach().cpu(), settings, player_map, shapley_values=attributions.values,
                   shapley_stderr=attributions.stderr, samples=attributions.samples)


def _round_default(estimator: str, num_players: int) -> int:
    """Samples per round: the registry's default for the coalition-counting ``kernel`` and ``tree``,
    :data:`ROUND_SAMPLES` for the others."""
    return default_n_samples(estimator, num_players) if estimator in ("kernel", "tree") else ROUND_SAMPLES


def _resolve_budget(estimator: str, num_players: int, n_samples: Optional[int], max_rounds: Optional[int]):
    """(samples per round, rounds cap): a given ``n_samples`` is a fixed budget (one round unless
    ``max_rounds`` says otherwise); None means the adaptive default."""
    fixed = n_samples is not None
    if n_samples is None:
        n_samples = _round_default(estimator, num_players)
    n_samples = check_positive_int(n_samples, "n_samples")
    if max_rounds is None:
        max_rounds = 1 if fixed else DEFAULT_MAX_ROUNDS
    return n_samples, check_positive_int(max_rounds, "max_rounds")


class CSABank:
    """Per-class NFC images for CSA (Chen2022 §5).

    Attributes:
        nfc_images: (M, C, H, W) float32 CPU tensor, grouped by class.
        labels: (M,) long, the class of every NFC image.
        settings: dict of how the bank was built (model name, image shape, classes, counts,
            players, estimator, n_samples, max_rounds, seed, attribution, library version,
            ``undetermined_fraction`` and ``mean_samples``).
        player_map: (H, W) long player partition in fft2 layout, or None for a custom attribution
            that did not declare one.
        shapley_values: (M, P) float64 per-player Shapley values behind the NFC masks (None for a
            custom attribution); each row sums to v(all) - v(DC only) (efficiency).
        shapley_stderr: (M, P) their standard errors, or None.
        samples: (M,) long samples spent per image, or None.

    Build with :meth:`build` (tensors) or :meth:`from_loader` (a DataLoader); persist with
    :meth:`save` / :meth:`load`.
    """

    def __init__(self, nfc_images: torch.Tensor, labels: torch.Tensor, settings: dict,
                 player_map: Optional[torch.Tensor] = None, *, shapley_values: Optional[torch.Tensor] = None,
                 shapley_stderr: Optional[torch.Tensor] = None, samples: Optional[torch.Tensor] = None):
        if not isinstance(nfc_images, torch.Tensor) or nfc_images.dim() != 4 or nfc_images.shape[0] == 0:
            raise ValueError("`nfc_images` must be a non-empty tensor (M, C, H, W)")
        m = nfc_images.shape[0]
        check_labels(labels, "labels", m)
        for name, extra in (("shapley_values", shapley_values), ("shapley_stderr", shapley_stderr),
                            ("samples", samples)):
            if extra is not None and (not isinstance(extra, torch.Tensor) or extra.shape[0] != m):
                raise ValueError(f"`{name}` must be a tensor with {m} rows (one per NFC image)")
        self.nfc_images = nfc_images.detach().to("cpu", torch.float32)
        self.labels = labels.detach().to("cpu", torch.long)
        self.settings = dict(settings)
        self.player_map = None if player_map is None else player_map.detach().to("cpu", torch.long)
        self.shapley_values = None if shapley_values is None else shapley_values.detach().to("cpu", torch.float64)
        self.shapley_stderr = None if shapley_stderr is None else shapley_stderr.detach().to("cpu", torch.float64)
        self.samples = None if samples is None else samples.detach().to("cpu", torch.long)

    # ------------------------------------------------------------------ views
    @property
    def image_shape(self):
        return tuple(self.nfc_images.shape[1:])

    @property
    def classes(self):
        return sorted(set(self.labels.tolist()))

    def for_class(self, label: int) -> torch.Tensor:
        """NFC images (m, C, H, W) of one class."""
        return self.nfc_images[self.labels == int(label)]

    def __len__(self) -> int:
        return self.nfc_images.shape[0]

    def __repr__(self) -> str:
        return (f"CSABank(images={len(self)}, classes={len(self.classes)}, image_shape={self.image_shape}, "
                f"players={self.settings.get('players')!r}, estimator={self.settings.get('estimator')!r})")

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, per_class: int = 150,
              classes: Optional[Iterable[int]] = None, players=16, n_samples: Optional[int] = None,
              estimator: Optional[str] = None, perturbations_per_eval: Optional[int] = None, seed: int = 0,
              batch_size: int = 16, attribution: Optional[Attribution] = None, model_name: Optional[str] = None,
              checkpoint: Optional[PathLike] = None, show_progress: bool = True, max_rounds: Optional[int] = None,
              sign_tolerance: float = DEFAULT_SIGN_TOLERANCE,
              max_evaluations: Optional[float] = None) -> "CSABank":
        """Compute the NFC images of the first ``per_class`` images of each class.

        Runs :func:`select_per_class`, :func:`attribute_images` and :func:`assemble_bank`.

        Sign stability (issue: a fixed 10 antithetic permutations left the NFC masks near random:
        two seeds agreed on 56-57 % of the bins, 50 % being chance; Chen2022 used 2,000
        permutations). The default is adaptive: rounds of 10 antithetic permutations per image,
        pooled, until at most ``sign_tolerance`` (25 %) of the players have ``|phi| < 2 stderr``,
        at most 8 rounds (80 permutations). A bank whose images have on average more than 50 %
        undetermined players warns.

        Measured (embedded ResNet-18, real CIFAR-10 images, two seeds, fraction of the 1023 non-DC
        bins on which the NFC masks agree; 50 % is chance):

        * ``players=16`` (136 players), 2 images, pooled rounds of 10: 59.3 % after 10 permutations
          (92.6 % of the players undetermined), 61.5 % after 20 (89.3 %), 65.4 % after 30 (85.8 %),
          67.5 % after 50 (81.8 %), 75.4 % after 80, the default cap (77.9 %):
          ``python bench/csa_sign_agreement.py --images 2 --rounds 8``. At this partition the default
          budget does not settle most signs and the build warns: a coarser partition (below) or many
          more permutations (Chen2022 used 2,000; not measured here) are needed.
        * ``players=4`` (10 players), 3 images, this default budget: 87.6 %
          (``tests/test_csa.py::test_two_seeds_agree_on_the_nfc_masks_with_the_default_budget``).

        Args:
            model: the pretrained classifier f^ (logits); in eval mode during the attribution and
                restored to its per-module modes afterwards. Labels are checked against its output width.
            inputs: images (N, C, H, W) in [0, 1]; labels: (N,) class indices.
            per_class: images per class (paper: 150 on CIFAR-10, ~3 % of the training set;
                30 on CIFAR-100). A class with fewer images uses all of them.
            classes: which classes to include (default: every label present).
            players: FrequencyShapley's partition; ``16`` (default) is the authors' 16x16 patch grid
                of the centered spectrum on 32x32 images (136 players).
            n_samples: samples per image. None (default): adaptive rounds of 10 (see above). An int:
                that fixed budget in one run (``max_rounds`` 1), as in freqplug <= 0.x.
            estimator: one of ``freqplug.attributions._estimators.ESTIMATORS`` (default ``"antithetic"``).
            perturbations_per_eval: masked images per forward call (default 128). FrequencyShapley is
                called on one image at a time, so Captum's per-example meaning is the same number.
            seed: base seed; image ``i`` (its position in ``inputs``) uses :func:`image_seed`, so an
                image's NFC image does not depend on ``per_class``, batching or a resume.
            batch_size: images per chunk (the checkpoint unit).
            attribution: replaces FrequencyShapley: ``attribution(inputs (n, C, H, W), target (n,))
                -> (n, H, W)`` Shapley map in fft2 layout. An optional ``settings`` dict attribute
                on the callable is recorded in the bank (and ``player_map`` if present).
            model_name: recorded in the settings.
            checkpoint: file for a resumable build: progress is written there (atomically)
                after every chunk, a later call with the same inputs, settings and model weights
                resumes from it without recomputing finished images, and it is deleted on success.
            show_progress: tqdm bar over images.
            max_rounds: rounds cap per image (default 8 adaptive, 1 with a given ``n_samples``).
            sign_tolerance: adaptive stop: at most this fraction of undetermined players.
            max_evaluations: refuse a build whose worst case needs more model evaluations (default
                2,000,000; ``float("inf")`` to allow any). The count is ``M * max_rounds * (2 +
                n_samples * (P - 1))`` for M images: the paper's CIFAR-10 bank (1,500 images, 136
                players) is up to 16 million, hours on a CPU.

        Returns:
            :class:`CSABank`.
        """
        if attribution is None and not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
        if attribution is not None:
            check_callable(attribution, "attribution")
        check_images(inputs, "inputs")
        check_labels(labels, "labels", inputs.shape[0])
        per_class = check_positive_int(per_class, "per_class")
        batch_size = check_positive_int(batch_size, "batch_size")
        seed = check_seed(seed, allow_none=False)
        estimator = DEFAULT_ESTIMATOR if estimator is None else check_choice(estimator, "estimator", ESTIMATORS)
        _, c, h, w = inputs.shape
        index = select_per_class(labels, per_class, classes)
        chosen_x = inputs.detach()[index.to(inputs.device)]
        chosen_y = labels.detach().cpu()[index]

        resolved = rounds = None
        if attribution is None:
            resolved = make_players(players, h, w, require_fixed_dc=True)
            player_map = resolved.player_map
            attribution_name = "FrequencyShapley(softmax(model))"
            attribution_settings = {}
            players_description = players if isinstance(players, (int, str)) else resolved.name
            n_samples, rounds = _resolve_budget(estimator, resolved.num_players, n_samples, max_rounds)
        else:
            declared = getattr(attribution, "player_map", None)
            player_map = declared.player_map if isinstance(declared, Players) else declared
            attribution_name = getattr(attribution, "__qualname__", type(attribution).__name__)
            attribution_settings = dict(getattr(attribution, "settings", {}) or {})
            players_description = attribution_settings.get("players")
        counts = {int(k): int(v) for k, v in zip(*torch.unique(chosen_y, return_counts=True))}
        default_game = attribution is None
        settings = {
            "model_name": model_name,
            "image_shape": [c, h, w],
            "classes": sorted(counts),
            "counts": counts,
            "per_class": per_class,
            "players": players_description,
            "n_samples": n_samples if default_game else attribution_settings.get("n_samples"),
            "max_rounds": rounds,
            "sign_tolerance": sign_tolerance if default_game else None,
            "estimator": estimator if default_game else attribution_settings.get("estimator"),
            "perturbations_per_eval": perturbations_per_eval if default_game else None,
            "seed": seed,
            "game": "softmax probability of the true class" if default_game else attribution_settings.get("game"),
            "attribution": attribution_name,
            "attribution_settings": attribution_settings,
            "batch_size": batch_size,
            "library": "freqplug",
            "library_version": __version__,
        }
        # what a resumed build must share with the interrupted one: images, labels, settings, partition and
        # the model's weights (a checkpoint of another model is refused)
        fingerprint = digest(chosen_x, chosen_y, index, {k: v for k, v in settings.items() if k != "library_version"},
                             player_map if player_map is not None else "no players",
                             model_digest(model) if isinstance(model, nn.Module) else "no model")
        attributions = attribute_images(
            model, chosen_x, chosen_y, index, players=resolved, estimator=estimator, n_samples=n_samples,
            max_rounds=rounds, sign_tolerance=sign_tolerance, perturbations_per_eval=perturbations_per_eval,
            seed=seed, batch_size=batch_size, attribution=attribution, checkpoint=checkpoint,
            fingerprint=fingerprint, max_evaluations=max_evaluations, show_progress=show_progress)
        bank = assemble_bank(chosen_x, chosen_y, attributions, settings, player_map)
        if checkpoint is not None and Path(checkpoint).exists():
            Path(checkpoint).unlink()
        return bank

    @classmethod
    def from_loader(cls, model: nn.Module, loader: Iterable, *, per_class: int = 150,
                    num_classes: Optional[int] = None, **build_kwargs) -> "CSABank":
        """Collect the first ``per_class`` images of each class from ``loader`` then :meth:`build`.

        Args:
            loader: iterable of ``(x (B, C, H, W), y (B,))`` batches (a DataLoader; the paper
                takes the first images without shuffling), or an ``(x, y)`` pair of tensors.
            num_classes: stop reading as soon as each of classes 0..num_classes-1 has
                ``per_class`` images (default: read the whole loader); labels >= it raise.
            build_kwargs: passed to :meth:`build`.
        """
        per_class = check_positive_int(per_class, "per_class")
        if num_classes is not None:
            check_positive_int(num_classes, "num_classes")
        kept_x, kept_y, counts = [], [], {}
        for xb, yb, _ in iter_labelled_batches(loader, name="loader"):
            check_images(xb, "loader")
            check_labels(yb, "loader labels", xb.shape[0], num_classes)
            keep = []
            for i, label in enumerate(yb.tolist()):
                if counts.get(label, 0) < per_class:
                    counts[label] = counts.get(label, 0) + 1
                    keep.append(i)
            if keep:
                keep_index = torch.tensor(keep, device=xb.device)
                kept_x.append(xb.detach()[keep_index])
                kept_y.append(yb.detach()[keep_index.to(yb.device)].cpu())
            if num_classes is not None and len(counts) == num_classes and min(counts.values()) >= per_class:
                break
        if not kept_x:
            raise ValueError("`loader` yielded no images")
        return cls.build(model, torch.cat(kept_x), torch.cat(kept_y), per_class=per_class, **build_kwargs)

    # ------------------------------------------------------------------ persistence
    def _checksum(self) -> str:
        extras = [t for t in (self.shapley_values, self.shapley_stderr, self.samples) if t is not None]
        return digest(self.nfc_images, self.labels, self.settings,
                      self.player_map if self.player_map is not None else "no players", *extras)

    def save(self, path: PathLike) -> Path:
        """Write the bank to ``path`` (torch format): NFC images, labels, player map, per-player values,
        settings, library version and a sha256 checksum. Written to a temporary file then renamed, so an
        existing good file is never destroyed by a failed save. Returns the path."""
        path = Path(path)
        payload = {
            "format": FILE_FORMAT,
            "format_version": FILE_FORMAT_VERSION,
            "library_version": __version__,
            "settings_json": json.dumps(self.settings, sort_keys=True, default=str),
            "nfc_images": self.nfc_images,
            "labels": self.labels,
            "player_map": self.player_map,
            "shapley_values": self.shapley_values,
            "shapley_stderr": self.shapley_stderr,
            "samples": self.samples,
            "checksum": self._checksum(),
        }
        atomic_save(payload, path)
        return path

    @classmethod
    def load(cls, path: PathLike, *, image_shape=None, num_classes: Optional[int] = None,
             players: Optional[Union[Players, torch.Tensor]] = None) -> "CSABank":
        """Load a bank written by :meth:`save`; never returns a half-loaded bank.

        Args:
            path: the file.
            image_shape: expected (C, H, W); a bank built for other images raises.
            num_classes: expected number of classes; a bank with labels >= num_classes raises.
            players: expected player partition (Players or (H, W) map); a different one raises.

        Raises:
            FileNotFoundError: no such file.
            ValueError: corrupt or truncated file, not a CSABank file, a newer file format,
                a failed checksum, or a mismatch with the expectations above.
        """
        path = Path(path)
        data = safe_load(path, "CSABank")
        if data.get("format") != FILE_FORMAT:
            raise ValueError(f"file {str(path)!r} is not a CSABank file (format {data.get('format')!r})")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FILE_FORMAT_VERSION:
            raise ValueError(
                f"CSABank file {str(path)!r} has format version {version!r}, this freqplug {__version__} reads "
                f"versions <= {FILE_FORMAT_VERSION}; upgrade freqplug"
            )
        missing = [k for k in ("settings_json", "nfc_images", "labels", "checksum") if k not in data]
        if missing:
            raise ValueError(f"CSABank file {str(path)!r} is incomplete: missing {missing}")
        try:
            settings = json.loads(data["settings_json"])
            settings["counts"] = {int(k): v for k, v in settings.get("counts", {}).items()}
            bank = cls(data["nfc_images"], data["labels"], settings, data.get("player_map"),
                       shapley_values=data.get("shapley_values"), shapley_stderr=data.get("shapley_stderr"),
                       samples=data.get("samples"))
        except (ValueError, TypeError) as error:
            raise ValueError(f"CSABank file {str(path)!r} holds inconsistent data: {error}") from error
        if bank._checksum() != data["checksum"]:
            raise ValueError(f"CSABank file {str(path)!r} failed its checksum (corrupt file); rebuild or re-copy it")
        if list(bank.image_shape) != list(settings.get("image_shape", [])):
            raise ValueError(f"CSABank file {str(path)!r} is inconsistent: images {bank.image_shape} vs settings "
                             f"{settings.get('image_shape')}")
        if image_shape is not None and tuple(image_shape) != bank.image_shape:
            raise ValueError(
                f"`image_shape`: CSABank file {str(path)!r} was built for images {bank.image_shape}, "
                f"expected {tuple(image_shape)}"
            )
        if num_classes is not None and max(bank.classes) >= num_classes:
            raise ValueError(
                f"`num_classes`: CSABank file {str(path)!r} has classes up to {max(bank.classes)}, expected fewer "
                f"than {num_classes}"
            )
        if players is not None:
            expected = players.player_map if isinstance(players, Players) else players
            if bank.player_map is None or not torch.equal(bank.player_map, expected.to(torch.long).cpu()):
                raise ValueError(f"`players`: CSABank file {str(path)!r} was built with a different player "
                                 f"partition ({settings.get('players')!r})")
        return bank


# ---------------------------------------------------------------------- augmentation
class CSAugment:
    """CSA augmentation hook (Chen2022 eq. 14): ``aug(x, y, epoch=e) = clamp(x + alpha * s * p, 0, 1)``.

    p is an NFC image drawn uniformly from the bank images of each sample's own class and
    ``s = min(1, epoch / ramp_epochs)`` ramps the augmentation in as in the authors' code
    (77 epochs of a 100-epoch schedule; ``ramp_epochs=0`` means s = 1 from the start).

    Args:
        bank: a :class:`CSABank`.
        alpha: coefficient of the NFC image (authors: 0.5).
        ramp_epochs: epochs to reach full strength.
        seed: seeds the draw of p (same seed -> same draws); None = non-deterministic.

    Plugging it in (the authors' two ways): PGD-AT attacks the augmented image
    (``x_adv = attack(aug(x, y, epoch=e), y)``); TRADES only starts PGD from the augmented
    image, projecting around the clean ``x`` and keeping the clean natural term.
    """

    def __init__(self, bank: CSABank, alpha: float = 0.5, ramp_epochs: int = 77, seed: Optional[int] = None):
        if not isinstance(bank, CSABank):
            raise TypeError(f"`bank` must be a CSABank, got {type(bank).__name__}")
        self.bank = bank
        self.alpha = check_number(alpha, "alpha", minimum=0.0)
        self.ramp_epochs = check_positive_int(ramp_epochs, "ramp_epochs", minimum=0)
        self.seed = seed
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(check_seed(seed, allow_none=False))
        else:
            self.generator.seed()
        labels = bank.labels
        order = torch.argsort(labels, stable=True)
        self._order = order
        num = int(labels.max()) + 1
        self._counts = torch.bincount(labels, minlength=num)
        self._offsets = torch.cumsum(self._counts, 0) - self._counts
        self._device_cache: Dict[tuple, torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"CSAugment(alpha={self.alpha}, ramp_epochs={self.ramp_epochs}, seed={self.seed}, bank={self.bank!r})"

    def strength(self, epoch: float) -> float:
        """alpha * min(1, epoch / ramp_epochs)."""
        epoch = check_number(epoch, "epoch", minimum=0.0)
        ramp = 1.0 if self.ramp_epochs == 0 else min(1.0, epoch / self.ramp_epochs)
        return self.alpha * ramp

    def draw(self, y: torch.Tensor) -> torch.Tensor:
        """Bank indices (N,) of one NFC image of each sample's class (uses the generator)."""
        labels = y.detach().cpu().long()
        counts = self._counts
        missing = sorted(set(labels.tolist()) - set(self.bank.classes))
        if missing:
            raise ValueError(f"`labels` holds classes {missing[:10]} that have no NFC images in the CSA bank "
                             f"(bank classes: {self.bank.classes})")
        uniform = torch.rand(labels.shape, generator=self.generator, dtype=torch.float64)
        pick = torch.minimum((uniform * counts[labels]).long(), counts[labels] - 1)
        return self._order[self._offsets[labels] + pick]

    def _bank_on(self, device, dtype) -> torch.Tensor:
        key = (str(device), dtype)
        if key not in self._device_cache:
            self._device_cache[key] = self.bank.nfc_images.to(device=device, dtype=dtype)
        return self._device_cache[key]

    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, epoch: float) -> torch.Tensor:
        """Augment a batch.

        Args:
            x: images (N, C, H, W) in [0, 1] of the bank's image shape; not modified.
            y: labels (N,).
            epoch: current epoch (the caller's counter; 0 -> no augmentation).

        Returns:
            (N, C, H, W) in x's dtype and device, in [0, 1], no graph to the bank.
        """
        check_images(x, "inputs")
        check_labels(y, "labels", x.shape[0])
        if tuple(x.shape[1:]) != self.bank.image_shape:
            raise ValueError(f"`inputs` images have shape {tuple(x.shape[1:])} but the CSA bank was built for "
                             f"{self.bank.image_shape}")
        scale = self.strength(epoch)
        index = self.draw(y)
        if scale == 0.0:
            return x.clone()
        patterns = self._bank_on(x.device, x.dtype)[index.to(x.device)]
        return torch.clamp(x + scale * patterns, 0, 1)
