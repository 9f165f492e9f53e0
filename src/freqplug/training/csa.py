"""Class-wise Shapley value-guided Augmentation (CSA, seed 000 §5, eq. 13-14).

Two pieces:

* :class:`CSABank`: for each class, the NFC images of a few training images, i.e. the
  real inverse DFT of the frequency components whose Shapley value (for the softmax
  probability of the true class under a pretrained model) is negative (eq. 13). Built in
  chunks with a progress bar, resumable from a checkpoint file, saved and loaded with the
  settings it was built with.
* :class:`CSAugment`: the training-time hook ``x_aug = clamp(x + alpha * s * p, 0, 1)``
  with p an NFC image of the sample's own class (eq. 14; IDFT(DFT(x) + a p) = x + a IDFT(p)).

How the authors plug the augmentation into adversarial training:

* PGD-AT: the attack runs on the augmented image, ``x_adv = PGD(model, aug(x, y, epoch))``
  (the eps-ball is around the augmented image), and the model trains on ``x_adv``.
* TRADES: the augmented image only moves the PGD starting point; the eps-ball projection
  and the natural (clean) term stay around the clean x.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Union

import torch
from torch import nn

from .._model import preserved_model_state
from .._validation import (
    check_choice,
    check_images,
    check_labels,
    check_number,
    check_positive_int,
)
from .._version import __version__
from ..attributions.frequency_shapley import negative_frequency_mask, reconstruct_from_mask
from ..spectral import Players, make_players

__all__ = ["CSABank", "CSAugment"]

#: What the file header says; load() refuses anything else.
FILE_FORMAT = "freqplug.CSABank"
CHECKPOINT_FORMAT = "freqplug.CSABank.checkpoint"
FILE_FORMAT_VERSION = 1

#: attribution(inputs (n, C, H, W), target (n,)) -> Shapley map (n, H, W) in fft2 layout.
Attribution = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

PathLike = Union[str, os.PathLike]


# ---------------------------------------------------------------------- file helpers
def _atomic_torch_save(obj: dict, path: Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A crash or a full disk mid-write leaves the previous file intact (os.replace is atomic
    on POSIX and Windows for paths on one file system).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_torch_file(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip/pickle/EOF errors all mean the same thing to the user
        raise ValueError(
            f"{what} file {str(path)!r} is corrupt or truncated and was not loaded "
            f"({type(error).__name__}: {str(error)[:200]})"
        ) from error
    if not isinstance(data, dict):
        raise ValueError(f"{what} file {str(path)!r} does not hold a freqplug {what} (got {type(data).__name__})")
    return data


def _digest(*parts) -> str:
    """sha256 over tensors (as CPU bytes) and JSON-able values."""
    sha = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            tensor = part.detach().cpu().contiguous()
            sha.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
            sha.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        else:
            sha.update(json.dumps(part, sort_keys=True, default=str).encode())
    return sha.hexdigest()


# ---------------------------------------------------------------------- selection
def _select_per_class(labels: torch.Tensor, per_class: int, classes: Optional[Iterable[int]]) -> torch.Tensor:
    """Indices of the first ``per_class`` images of every class, in dataset order (the authors
    took "the first 150 images without shuffling"), grouped by class."""
    wanted = sorted(set(int(c) for c in (classes if classes is not None else labels.unique().tolist())))
    chosen = []
    for c in wanted:
        idx = (labels == c).nonzero().flatten()[:per_class]
        if idx.numel() == 0:
            raise ValueError(f"class {c} has no images in `labels`; cannot build its NFC set")
        chosen.append(idx)
    return torch.cat(chosen)


def _frequency_shapley_attribution(model: nn.Module, players, n_samples, estimator, perturbations_per_eval,
                                   seed) -> Attribution:
    """The authors' game: FrequencyShapley of the softmax probability of the true class."""
    try:
        from ..attributions.frequency_shapley import FrequencyShapley
    except ImportError as error:  # pragma: no cover - depends on the installed version
        raise ImportError(
            "CSABank needs freqplug.attributions.FrequencyShapley for its default attribution; "
            "pass `attribution=` (a callable (inputs, target) -> Shapley map (N, H, W)) instead"
        ) from error

    def probability(z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(z), dim=1)

    explainer = FrequencyShapley(probability)
    options = {"players": players, "n_samples": n_samples, "estimator": estimator,
               "perturbations_per_eval": perturbations_per_eval, "seed": seed}
    options = {k: v for k, v in options.items() if v is not None}

    def attribution(inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return explainer.attribute(inputs, target=target, show_progress=False, **options)

    attribution.__qualname__ = "FrequencyShapley(softmax(model))"
    return attribution


def _resolve_estimator(estimator: Optional[str], n_samples: Optional[int], num_players: int):
    """FrequencyShapley's defaults for ``estimator`` and ``n_samples`` when not given."""
    import inspect

    from ..attributions import frequency_shapley as module

    if estimator is None:
        estimator = inspect.signature(module.FrequencyShapley.attribute).parameters["estimator"].default
    if n_samples is None:
        n_samples = getattr(module, "DEFAULT_N_SAMPLES", {}).get(estimator) or 8 * num_players
    return estimator, n_samples


def nfc_images(x: torch.Tensor, shapley_map: torch.Tensor) -> torch.Tensor:
    """NFC images (seed 000 eq. 13): ``IDFT( 1[phi < 0] * DFT(x) )`` with DC excluded.

    Args:
        x: images (N, C, H, W).
        shapley_map: (N, H, W) Shapley value per bin in ``torch.fft.fft2`` layout (each bin
            carries its player's value; conjugate-symmetric because players are conjugate-closed).

    Returns:
        (N, C, H, W) real, signed, unclipped images in ``x.dtype``.
    """
    if not isinstance(shapley_map, torch.Tensor) or shapley_map.dim() != 3:
        raise ValueError(
            "the attribution must return a Shapley map of shape (N, H, W), got "
            f"{tuple(shapley_map.shape) if isinstance(shapley_map, torch.Tensor) else type(shapley_map).__name__}"
        )
    n, c, h, w = x.shape
    if tuple(shapley_map.shape) != (n, h, w):
        raise ValueError(f"the attribution must return a Shapley map of shape {(n, h, w)}, got {tuple(shapley_map.shape)}")
    # DC is excluded: it is always present in the game, never a player
    return reconstruct_from_mask(x, negative_frequency_mask(shapley_map.detach()).to(x.device), include_dc=False)


# ---------------------------------------------------------------------- bank
class CSABank:
    """Per-class NFC images for CSA (seed 000 §5).

    Attributes:
        nfc_images: (M, C, H, W) float32 CPU tensor, grouped by class.
        labels: (M,) long, the class of every NFC image.
        settings: dict of how the bank was built (model name, image shape, classes, counts,
            players, estimator, n_samples, seed, attribution, library version).
        player_map: (H, W) long player partition in fft2 layout, or None for a custom attribution
            that did not declare one.

    Build with :meth:`build` (tensors) or :meth:`from_loader` (a DataLoader); persist with
    :meth:`save` / :meth:`load`.
    """

    def __init__(self, nfc_images: torch.Tensor, labels: torch.Tensor, settings: dict,
                 player_map: Optional[torch.Tensor] = None):
        if not isinstance(nfc_images, torch.Tensor) or nfc_images.dim() != 4 or nfc_images.shape[0] == 0:
            raise ValueError("`nfc_images` must be a non-empty tensor (M, C, H, W)")
        check_labels(labels, "labels", nfc_images.shape[0])
        self.nfc_images = nfc_images.detach().to("cpu", torch.float32)
        self.labels = labels.detach().to("cpu", torch.long)
        self.settings = dict(settings)
        self.player_map = None if player_map is None else player_map.detach().to("cpu", torch.long)

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
              checkpoint: Optional[PathLike] = None, show_progress: bool = True) -> "CSABank":
        """Compute the NFC images of the first ``per_class`` images of each class.

        Args:
            model: the pretrained classifier f^ (logits); put in eval mode for the attribution
                and restored to its mode afterwards.
            inputs: images (N, C, H, W) in [0, 1]; labels: (N,) class indices.
            per_class: images per class (paper: 150 on CIFAR-10, ~3 % of the training set;
                30 on CIFAR-100). A class with fewer images uses all of them.
            classes: which classes to include (default: every label present).
            players, n_samples, estimator, perturbations_per_eval, seed: passed to
                ``FrequencyShapley.attribute`` (None = its default); ``players=16`` is the
                authors' 16x16 patch grid on 32x32 images. ``seed`` is used for every chunk so
                the result does not depend on where a build was interrupted.
            batch_size: images per attribution call (one chunk; the checkpoint unit).
            attribution: replaces FrequencyShapley: ``attribution(inputs (n, C, H, W), target (n,))
                -> (n, H, W)`` Shapley map in fft2 layout. An optional ``settings`` dict attribute
                on the callable is recorded in the bank (and ``player_map`` if present).
            model_name: recorded in the settings.
            checkpoint: file for a resumable build: progress is written there (atomically)
                after every chunk, a later call with the same inputs and settings resumes
                from it without recomputing finished images, and it is deleted on success.
            show_progress: tqdm bar over chunks.

        Returns:
            :class:`CSABank`.
        """
        if not isinstance(model, nn.Module) and attribution is None:
            raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
        check_images(inputs, "inputs")
        check_labels(labels, "labels", inputs.shape[0])
        per_class = check_positive_int(per_class, "per_class")
        batch_size = check_positive_int(batch_size, "batch_size")
        check_positive_int(seed, "seed", minimum=0)
        if attribution is not None and not callable(attribution):
            raise TypeError(f"`attribution` must be callable(inputs, target) -> (N, H, W), got {type(attribution).__name__}")
        if estimator is not None:
            check_choice(estimator, "estimator", ("antithetic", "permutation", "kernel"))
        n, c, h, w = inputs.shape
        index = _select_per_class(labels.detach().cpu(), per_class, classes)
        chosen_x = inputs.detach()[index.to(inputs.device)]
        chosen_y = labels.detach()[index.to(labels.device)].cpu()

        if attribution is None:
            resolved = make_players(players, h, w)
            player_map = resolved.player_map
            attribution_name = "FrequencyShapley(softmax(model))"
            attribution_settings = {}
            players_description = players if isinstance(players, (int, str)) else resolved.name
            # record (and pass) FrequencyShapley's defaults explicitly so the bank is reproducible
            estimator, n_samples = _resolve_estimator(estimator, n_samples, resolved.num_players)
            compute = _frequency_shapley_attribution(model, resolved, n_samples, estimator,
                                                     perturbations_per_eval, seed)
        else:
            declared = getattr(attribution, "player_map", None)
            player_map = declared.player_map if isinstance(declared, Players) else declared
            attribution_name = getattr(attribution, "__qualname__", type(attribution).__name__)
            attribution_settings = dict(getattr(attribution, "settings", {}) or {})
            players_description = attribution_settings.get("players")
            compute = attribution
        counts = {int(k): int(v) for k, v in zip(*torch.unique(chosen_y, return_counts=True))}
        settings = {
            "model_name": model_name,
            "image_shape": [c, h, w],
            "classes": sorted(counts),
            "counts": counts,
            "per_class": per_class,
            "players": players_description,
            "n_samples": n_samples if attribution is None else attribution_settings.get("n_samples"),
            "estimator": estimator if attribution is None else attribution_settings.get("estimator"),
            "perturbations_per_eval": perturbations_per_eval if attribution is None else None,
            "seed": seed,
            "game": "softmax probability of the true class" if attribution is None else
            attribution_settings.get("game"),
            "attribution": attribution_name,
            "attribution_settings": attribution_settings,
            "batch_size": batch_size,
            "library": "freqplug",
            "library_version": __version__,
        }
        # what a resumed build must share with the interrupted one: images, labels, settings, partition and
        # the model's weights (a checkpoint of another model is refused)
        weights = [t for t in model.state_dict().values()] if isinstance(model, nn.Module) else []
        fingerprint = _digest(chosen_x, chosen_y, {k: v for k, v in settings.items() if k != "library_version"},
                              player_map if player_map is not None else "no players", *weights)

        done = []
        checkpoint_path = None if checkpoint is None else Path(checkpoint)
        if checkpoint_path is not None and checkpoint_path.exists():
            state = _read_torch_file(checkpoint_path, "CSABank checkpoint")
            if state.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"checkpoint file {str(checkpoint_path)!r} is not a CSABank build checkpoint")
            if state.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"checkpoint file {str(checkpoint_path)!r} was written by a build with different inputs or "
                    "settings (model weights, images, labels, per_class, players, estimator, n_samples, seed, batch_size); "
                    "delete it or pass the same arguments to resume"
                )
            partial = state.get("nfc_images")
            if not isinstance(partial, torch.Tensor) or tuple(partial.shape[1:]) != (c, h, w) \
                    or partial.shape[0] > chosen_x.shape[0]:
                raise ValueError(f"checkpoint file {str(checkpoint_path)!r} is inconsistent; delete it to rebuild")
            done = list(partial.split(batch_size)) if partial.shape[0] else []

        total = chosen_x.shape[0]
        starts = list(range(0, total, batch_size))
        progress = None
        if show_progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=total, desc="CSA bank (frequency Shapley)", unit="img",
                            initial=sum(d.shape[0] for d in done))
        try:
            with preserved_model_state(model):
                if isinstance(model, nn.Module):
                    model.eval()
                for chunk, start in enumerate(starts):
                    if chunk < len(done):
                        continue
                    xb = chosen_x[start:start + batch_size]
                    yb = chosen_y[start:start + batch_size].to(xb.device)
                    with torch.no_grad():
                        phi = compute(xb, yb)
                    done.append(nfc_images(xb, phi.to(xb.device)).detach().to("cpu", torch.float32))
                    if checkpoint_path is not None:
                        _atomic_torch_save({"format": CHECKPOINT_FORMAT, "fingerprint": fingerprint,
                                            "nfc_images": torch.cat(done)}, checkpoint_path)
                    if progress is not None:
                        progress.update(xb.shape[0])
        finally:
            if progress is not None:
                progress.close()
        bank = cls(torch.cat(done), chosen_y, settings, player_map)
        if checkpoint_path is not None and checkpoint_path.exists():
            checkpoint_path.unlink()
        return bank

    @classmethod
    def from_loader(cls, model: nn.Module, loader: Iterable, *, per_class: int = 150,
                    num_classes: Optional[int] = None, **build_kwargs) -> "CSABank":
        """Collect the first ``per_class`` images of each class from ``loader`` then :meth:`build`.

        Args:
            loader: iterable of ``(x (B, C, H, W), y (B,))`` batches (a DataLoader; the paper
                takes the first images without shuffling).
            num_classes: stop reading as soon as each of classes 0..num_classes-1 has
                ``per_class`` images (default: read the whole loader).
            build_kwargs: passed to :meth:`build`.
        """
        per_class = check_positive_int(per_class, "per_class")
        if num_classes is not None:
            check_positive_int(num_classes, "num_classes")
        kept_x, kept_y, counts = [], [], {}
        for batch in loader:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError("`loader` must yield (inputs, labels) batches")
            xb, yb = batch[0], batch[1]
            check_images(xb, "loader inputs")
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
        return _digest(self.nfc_images, self.labels, self.settings,
                       self.player_map if self.player_map is not None else "no players")

    def save(self, path: PathLike) -> Path:
        """Write the bank to ``path`` (torch format): NFC images, labels, player map, settings,
        library version and a sha256 checksum. Written to a temporary file then renamed, so an
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
            "checksum": self._checksum(),
        }
        _atomic_torch_save(payload, path)
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
        data = _read_torch_file(path, "CSABank")
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
            bank = cls(data["nfc_images"], data["labels"], settings, data.get("player_map"))
        except (ValueError, TypeError) as error:
            raise ValueError(f"CSABank file {str(path)!r} holds inconsistent data: {error}") from error
        if bank._checksum() != data["checksum"]:
            raise ValueError(f"CSABank file {str(path)!r} failed its checksum (corrupt file); rebuild or re-copy it")
        if list(bank.image_shape) != list(settings.get("image_shape", [])):
            raise ValueError(f"CSABank file {str(path)!r} is inconsistent: images {bank.image_shape} vs settings "
                             f"{settings.get('image_shape')}")
        if image_shape is not None and tuple(image_shape) != bank.image_shape:
            raise ValueError(
                f"CSABank file {str(path)!r} was built for images {bank.image_shape}, expected {tuple(image_shape)}"
            )
        if num_classes is not None and max(bank.classes) >= num_classes:
            raise ValueError(
                f"CSABank file {str(path)!r} has classes up to {max(bank.classes)}, expected fewer than {num_classes}"
            )
        if players is not None:
            expected = players.player_map if isinstance(players, Players) else players
            if bank.player_map is None or not torch.equal(bank.player_map, expected.to(torch.long).cpu()):
                raise ValueError(f"CSABank file {str(path)!r} was built with a different player partition "
                                 f"({settings.get('players')!r})")
        return bank


# ---------------------------------------------------------------------- augmentation
class CSAugment:
    """CSA augmentation hook (seed 000 eq. 14): ``aug(x, y, epoch=e) = clamp(x + alpha * s * p, 0, 1)``.

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
            self.generator.manual_seed(check_positive_int(seed, "seed", minimum=0))
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
