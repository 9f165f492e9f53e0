"""Base class of freqplug's torchattacks attacks: model hygiene, settings adoption and input checks.

Both :class:`~freqplug.HFAttack` and :class:`~freqplug.FrequencyMaskedAttack` derive from
:class:`FrequencyAttack`, so the conventions are written once:

* every call leaves the user's model as it was (per-module train flags, ``requires_grad``, ``.grad``),
  through :func:`freqplug._model.preserved_model_state`;
* the first forward of every call is a forward of the clean images, checked with
  :func:`freqplug._model.check_logits`: finite logits, and labels (or targets in
  ``set_mode_targeted_by_label``) inside the model's output width K;
* targets made by a targeted mode (``set_mode_targeted_by_function`` / ``_random`` /
  ``_least_likely``) are checked against K when they are made;
* settings are copied from another attack without going through ``Attack.__setattr__``, which
  compares the values it walks with ``==`` and fails on a dict of 3-channel tensors
  (``normalization_used`` after ``set_normalization_used``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torchattacks.attack import Attack

from .._model import check_logits, model_device_dtype, preserved_model_state
from .._validation import check_images, check_labels

__all__ = ["FrequencyAttack", "targets_checked"]

#: Attack attributes that describe its state (mode, normalization, model mode, device), copied by
#: :meth:`FrequencyAttack._adopt_settings`.
_SETTINGS = ("device", "attack_mode", "targeted", "_target_map_function", "_kth_min", "normalization_used",
             "_normalization_applied", "_model_training", "_batchnorm_training", "_dropout_training")

#: torchattacks' attack_mode of ``set_mode_targeted_by_label``: the labels given to the call are the targets.
BY_LABEL = "targeted(label)"


class FrequencyAttack(Attack):
    """torchattacks ``Attack`` whose calls restore the model and check the model's outputs and the labels.

    After every call: :attr:`clean_predictions` (N,) long, the model's predictions on the clean
    images (one extra forward of N images per call, chunked), and :attr:`clean_correct` (N,) bool,
    ``clean_predictions == labels`` (None in ``set_mode_targeted_by_label``, where the labels given
    to the call are the targets, not the true classes).
    """

    def __init__(self, name: str, model):
        super().__init__(name, model)
        self._clean_predictions: Optional[torch.Tensor] = None
        self._clean_correct: Optional[torch.Tensor] = None

    # --------------------------------------------------------------------- torchattacks hooks
    def __call__(self, inputs, labels=None, *args, **kwargs):
        # torchattacks' _recover_model_mode only calls model.train() for a model that was training;
        # an eval-mode model attacked with set_model_training_mode(True) would stay in training mode.
        with preserved_model_state(self.model):
            return super().__call__(inputs, labels, *args, **kwargs)

    # --------------------------------------------------------------------- results
    @property
    def clean_predictions(self) -> Optional[torch.Tensor]:
        """(N,) long (CPU): the model's predictions on the clean images of the last call."""
        return self._clean_predictions

    @property
    def clean_correct(self) -> Optional[torch.Tensor]:
        """(N,) bool (CPU): clean prediction == label in the last call; None in targeted-by-label mode."""
        return self._clean_correct

    # --------------------------------------------------------------------- helpers
    def _model_dtype(self, fallback: torch.dtype) -> torch.dtype:
        return model_device_dtype(self.model, default_dtype=fallback)[1]

    def _adopt_settings(self, attack: Attack) -> None:
        """Copy ``attack``'s mode, normalization, model-mode flags and device onto this attack."""
        for name in _SETTINGS:
            if name in attack.__dict__:
                value = attack.__dict__[name]
                if name == "normalization_used" and value is not None:
                    value = dict(value)  # our own dict, holding the same tensors
                # object.__setattr__: Attack.__setattr__ compares walked values with `==` (fails on
                # a dict of multi-element tensors) and only needs to see Attack values.
                object.__setattr__(self, name, value)

    def _check_call(self, images, labels, *, batch_size: Optional[int] = None) -> torch.Tensor:
        """Check the inputs of a call and run (and check) the clean forward; return ``clean_logits``.

        Args:
            images: (N, C, H, W) floating, finite, in [0, 1] (after torchattacks' inverse
                normalization).
            labels: (N,) class indices (the targets in ``set_mode_targeted_by_label``).
            batch_size: images per forward call of the clean forward (None: all at once).

        Returns:
            (N, K) logits of the clean images (no graph).

        Raises:
            ValueError: missing labels, wrong batch, labels outside [0, K), non-finite logits.
        """
        check_images(images, "images")
        if labels is None:
            raise ValueError("`labels` must be given: class indices (N,) (the target classes in "
                             "set_mode_targeted_by_label)")
        check_labels(labels, "labels", images.shape[0])
        n = images.shape[0]
        step = n if batch_size is None else max(1, int(batch_size))
        dtype = self._model_dtype(images.dtype)
        chunks = []
        with torch.no_grad():
            for start in range(0, n, step):
                chunk = images[start:start + step].to(device=self.device, dtype=dtype)
                logits = check_logits(self.get_logits(chunk), self.model, batch_size=chunk.shape[0])
                if start == 0:
                    role = "target classes (set_mode_targeted_by_label)" if self.attack_mode == BY_LABEL \
                        else "class indices"
                    _check_width(labels, "labels", role, int(logits.shape[1]), self.model)
                chunks.append(logits.detach())
        logits = torch.cat(chunks) if chunks else torch.zeros(0, 0)
        predictions = logits.argmax(dim=1).cpu()
        self._clean_predictions = predictions
        self._clean_correct = None if self.attack_mode == BY_LABEL else predictions == labels.detach().cpu()
        return logits

    def _targets_checked(self, attack: Attack, num_classes: int):
        """See :func:`targets_checked`."""
        return targets_checked(attack, num_classes)


@contextmanager
def targets_checked(attack: Attack, num_classes: int) -> Iterator[None]:
    """Inside the block, targets made by ``attack``'s targeted mode are checked against ``num_classes``.

    Wraps ``attack._target_map_function`` (the function of ``set_mode_targeted_by_function`` /
    ``_random`` / ``_least_likely``) for the block, so the targets are checked when the attack makes
    them: no extra model evaluation and no extra draw from the RNG. Other modes are left alone.
    """
    function = attack.__dict__.get("_target_map_function")
    if not getattr(attack, "targeted", False) or attack.attack_mode == BY_LABEL or not callable(function):
        yield
        return

    def checked(inputs, labels=None):
        targets = function(inputs, labels)
        check_labels(targets, "targets", inputs.shape[0])
        _check_width(targets, "targets", f"target classes made by the {attack.attack_mode} mode of "
                     f"{attack.attack}", num_classes, attack.model)
        return targets

    object.__setattr__(attack, "_target_map_function", checked)
    try:
        yield
    finally:
        object.__setattr__(attack, "_target_map_function", function)


def _check_width(labels: torch.Tensor, name: str, role: str, num_classes: int, model) -> None:
    """Refuse labels outside [0, K) of a model that returns K logits (they would score as wrong forever)."""
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"`{name}` ({role}) must lie in [0, {num_classes}): the model "
                         f"({type(model).__name__}) returns {num_classes} logits; got values in [{lo}, {hi}]")
