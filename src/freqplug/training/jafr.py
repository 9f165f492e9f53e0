"""Jacobian frequency regularization (JaFR, Chan2022 §3.2, Algorithm 1) as a drop-in loss.

``JaFRLoss`` replaces the ``loss = F.cross_entropy(model(x), y)`` line of an existing
training loop::

    jafr = JaFRLoss(lambda_freq=0.001)
    out = jafr(model, x, y)          # out.loss = L_cls + lambda * L_freq (eq. 12)
    optimizer.zero_grad(); out.loss.backward(); optimizer.step()

FGSM adversarial training + JaFR reuses one input gradient for both the FGSM direction
and the Jacobian penalty: :meth:`JaFRLoss.fgsm_step` (or ``return_input_gradient=True``
for a hand-rolled attack step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .._model import check_logits, preserved_model_state
from .._validation import check_callable, check_finite, check_images, check_number, check_positive_int, check_same_batch
from ..spectral import frequency_bias

__all__ = ["JaFRLoss", "JaFROutput"]

BaseLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class JaFROutput:
    """What one :class:`JaFRLoss` call returns.

    Attributes:
        loss: 0-dim differentiable total, ``base_loss + penalty`` (Chan2022 eq. 12); call
            ``.backward()`` on it.
        base_loss: 0-dim, detached: L_cls on the trained inputs (clean inputs, or the FGSM
            examples for :meth:`JaFRLoss.fgsm_step`).
        frequency_bias: 0-dim, detached: B_low of the Jacobian (log form, eq. 10-11), or None
            when this step skipped the penalty (``every > 1``).
        penalty: 0-dim differentiable ``lambda_freq * L_freq = -lambda_freq * B_low``
            (0 when skipped); add it to your own loss when composing by hand.
        logits: (N, K), detached: the model outputs behind ``base_loss``.
        input_gradient: (N, C, H, W), detached: J = d L_cls / d x when requested (or from
            :meth:`JaFRLoss.fgsm_step`), else None.
        adversarial_inputs: (N, C, H, W), detached: the FGSM examples (fgsm_step only).
    """

    loss: torch.Tensor
    base_loss: torch.Tensor
    frequency_bias: Optional[torch.Tensor]
    penalty: torch.Tensor
    logits: torch.Tensor
    input_gradient: Optional[torch.Tensor] = None
    adversarial_inputs: Optional[torch.Tensor] = None


class JaFRLoss:
    """JaFR loss ``L_cls + lambda_freq * L_freq`` with ``L_freq = -B_low(J)``, ``J = d L_cls / d x``.

    Chan2022 eq. 11-12 and Algorithm 1: the classification loss is the batch-mean
    cross-entropy at the clean input (the authors' default), its input gradient J (N, C, H, W)
    is computed with ``create_graph=True`` so that B_low(J)
    (:func:`freqplug.spectral.frequency_bias`) is differentiable in the parameters, and one
    ``loss.backward()`` updates the model for both terms (one extra backward pass: double
    backpropagation).

    Args:
        lambda_freq: weight of L_freq. > 0 biases the Jacobian toward low frequencies
            (JaFR; 0.001 as the authors on SVHN/CIFAR, 0.05 for FGSM+JaFR on SVHN),
            < 0 toward high frequencies (the paper's JaFR(-)), 0 turns the penalty off.
        base_loss: ``base_loss(logits (N, K), y (N,)) -> 0-dim`` mean-reduced loss (L_cls);
            default ``F.cross_entropy``. J is the input gradient of this loss.
        sub_batch: cost cut, off by default (None). If an int k < N, the penalty is computed
            on the first k samples only, through a second forward pass of those k samples,
            while L_cls still covers the whole batch with a plain (single-order) graph. The
            double backward then costs about k/N of the full one. Effect: a noisier B_low
            estimate; the sub-batch gradient is scaled by k/N so J has the per-sample scale
            of the full-batch J. In train mode BatchNorm running statistics also see the
            sub-batch forward.
        every: cost cut, off by default (1). Compute the penalty on every ``every``-th call
            only; other calls return the plain ``L_cls`` (``frequency_bias`` None).
            Effect: the regularizer acts ``every`` times less often (compensate with a
            larger ``lambda_freq`` if needed). The call counter is :attr:`step`.

    Works with any ``nn.Module`` classifier returning logits (N, K), any device, and under
    ``torch.autocast`` (the Jacobian keeps the input dtype; B_low is computed in float32 or
    float64). The caller's ``x`` is never modified and gets no graph and no ``.grad``
    (a detached leaf copy is differentiated); the model's train/eval mode is left as is.
    """

    def __init__(self, lambda_freq: float = 0.001, base_loss: BaseLoss = F.cross_entropy, *,
                 sub_batch: Optional[int] = None, every: int = 1):
        self.lambda_freq = check_number(lambda_freq, "lambda_freq")
        check_callable(base_loss, "base_loss")
        self.base_loss = base_loss
        self.sub_batch = None if sub_batch is None else check_positive_int(sub_batch, "sub_batch")
        self.every = check_positive_int(every, "every")
        self.step = 0

    def __repr__(self) -> str:
        name = getattr(self.base_loss, "__name__", self.base_loss)
        return (f"JaFRLoss(lambda_freq={self.lambda_freq}, base_loss={name},"
                f" sub_batch={self.sub_batch}, every={self.every})")

    def reset(self) -> None:
        """Reset the call counter used by ``every``."""
        self.step = 0

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check(model, x, y) -> None:
        check_callable(model, "model")
        # [0, 1] images like every other entry point: x * 255 would make FGSM's clamp to [0, 1] return
        # near-white images, and a NaN pixel a NaN loss
        check_images(x, "x", min_size=2)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"`y` must be a torch.Tensor of class indices (N,), got {type(y).__name__}")
        if y.dim() < 1:
            raise ValueError(f"`y` must have a batch dimension (N, ...), got shape {tuple(y.shape)}")
        check_same_batch(y.shape[0], x.shape[0], "y", reference="x")

    def _classification_loss(self, model, logits, y: torch.Tensor) -> torch.Tensor:
        # the logits of the loss itself are checked (no extra forward): finite, (N, K), and integer
        # labels in [0, K); other targets (soft labels, ...) are base_loss's business
        labels = y if not (y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool) else None
        check_logits(logits, model, batch_size=y.shape[0], labels=labels, labels_name="y")
        loss = self.base_loss(logits, y)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ValueError(
                "`base_loss` must return a 0-dim (mean-reduced) tensor, got "
                f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__}"
            )
        if not bool(torch.isfinite(loss.detach())):
            raise ValueError(f"`base_loss` returned a non-finite loss ({float(loss.detach())}) on finite logits")
        return loss

    @staticmethod
    def _check_bias(bias: torch.Tensor) -> torch.Tensor:
        check_finite(bias.detach().reshape(1), "frequency_bias of the input gradient")
        return bias

    def _penalty_due(self) -> bool:
        due = self.step % self.every == 0
        self.step += 1
        return due and self.lambda_freq != 0.0

    def _jacobian_penalty(self, model, x_sub: torch.Tensor, y_sub: torch.Tensor, scale: float):
        """Second forward of a sub-batch -> (J (k, C, H, W) with graph, B_low with graph)."""
        leaf = x_sub.detach().requires_grad_(True)
        loss_sub = self._classification_loss(model, model(leaf), y_sub) * scale
        (jacobian,) = torch.autograd.grad(loss_sub, leaf, create_graph=True)
        return jacobian, self._check_bias(frequency_bias(jacobian))

    # ------------------------------------------------------------------ API
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                 return_input_gradient: bool = False) -> JaFROutput:
        """One JaFR loss evaluation (Algorithm 1, lines 3-6).

        Args:
            model: classifier, ``model(x) -> logits (N, K)``; its per-module modes, ``requires_grad``
                and ``.grad`` are left as they were (the returned loss carries the graph to the parameters).
            x: images (N, C, H, W) in [0, 1], float, finite, at least 2x2.
            y: targets (N,) class indices in [0, K) (checked against the logits), or whatever else
                ``base_loss`` takes, batch-first.
            return_input_gradient: also return J (detached) as ``out.input_gradient``, e.g. to
                take an FGSM step from the same gradient (see :meth:`fgsm_step`). On a step
                where the penalty is skipped J is still computed (first order, no graph).

        Returns:
            :class:`JaFROutput` with ``loss = L_cls + lambda_freq * (-B_low(J))``.

        Raises:
            ValueError: ``x`` outside [0, 1] or not finite; ``y`` outside the model's classes; the model's
                logits, the loss or B_low not finite.

        Cost: one forward and one double backward (``sub_batch=k``: plus a forward of k images).
        """
        self._check(model, x, y)
        penalty_due = self._penalty_due()
        n = x.shape[0]
        use_sub = penalty_due and self.sub_batch is not None and self.sub_batch < n
        # the Jacobian needs a graph even inside a no_grad block
        with torch.enable_grad(), preserved_model_state(model):
            # only differentiate w.r.t. the input when J is needed from this forward
            leaf = x.detach().requires_grad_((penalty_due and not use_sub) or return_input_gradient)
            logits = model(leaf)
            base = self._classification_loss(model, logits, y)
            bias = jacobian = None
            if penalty_due and not use_sub:
                (jacobian,) = torch.autograd.grad(base, leaf, create_graph=True)
                bias = self._check_bias(frequency_bias(jacobian))
            elif use_sub:
                k = self.sub_batch
                _, bias = self._jacobian_penalty(model, x[:k], y[:k], k / n)
                if return_input_gradient:
                    (jacobian,) = torch.autograd.grad(base, leaf, retain_graph=True)
            elif return_input_gradient:
                (jacobian,) = torch.autograd.grad(base, leaf, retain_graph=True)
            penalty = -self.lambda_freq * bias if bias is not None else base.new_zeros(())
            total = base + penalty.to(base.dtype) if bias is not None else base
        return JaFROutput(
            loss=total,
            base_loss=base.detach(),
            frequency_bias=None if bias is None else bias.detach(),
            penalty=penalty,
            logits=logits.detach(),
            input_gradient=None if (jacobian is None or not return_input_gradient) else jacobian.detach(),
        )

    def fgsm_step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epsilon: float = 8 / 255,
                  step_size: Optional[float] = None, random_start: bool = True,
                  generator: Optional[torch.Generator] = None) -> JaFROutput:
        """FGSM adversarial training + JaFR from ONE input gradient (the documented way to combine them).

        The authors' FGSM-AT step (fast adversarial training: uniform start, step 1.25 eps):
        ``x0 = clamp(x + U(-eps, eps), 0, 1)``; ``g = d L_cls(x0) / d x0`` computed once with
        ``create_graph=True``; ``delta = clamp(x0 - x + step_size * sign(g), -eps, eps)``;
        ``x_adv = clamp(x + delta, 0, 1)``; the returned loss is
        ``L_cls(model(x_adv), y) - lambda_freq * B_low(g)``: the same g gives the FGSM
        direction and the JaFR Jacobian (the authors' code computes a second gradient at the
        clean x; this saves one forward+backward, and with ``random_start=False`` the two are
        identical).

        With ``sub_batch=k`` the shared gradient is first order (plain FGSM) and the penalty comes
        from a separate forward + double backward of the first k start points (about k/N of its
        cost); with ``every=k`` the other steps are plain FGSM-AT steps.

        Args:
            model, x, y: as in :meth:`__call__` (``x`` images in [0, 1]: the FGSM examples are clamped there).
            epsilon: L-inf radius. step_size: FGSM step (default ``1.25 * epsilon``).
            random_start: uniform start in the eps-ball (authors' default) or start at x.
            generator: torch.Generator for the random start (reproducible); None draws from the global RNG.

        Returns:
            :class:`JaFROutput`; ``base_loss`` and ``logits`` are on the FGSM examples,
            ``input_gradient`` is g and ``adversarial_inputs`` is x_adv (both detached).
        """
        self._check(model, x, y)
        epsilon = check_number(epsilon, "epsilon", minimum=0.0)
        step_size = 1.25 * epsilon if step_size is None else check_number(step_size, "step_size", minimum=0.0)
        penalty_due = self._penalty_due()
        x = x.detach()
        if random_start:
            noise = torch.rand(x.shape, generator=generator, dtype=x.dtype,
                               device="cpu" if generator is None else generator.device).to(x.device)
            start = torch.clamp(x + (2 * noise - 1) * epsilon, 0, 1)
        else:
            start = x.clone()
        n = x.shape[0]
        use_sub = penalty_due and self.sub_batch is not None and self.sub_batch < n
        with torch.enable_grad(), preserved_model_state(model):
            leaf = start.requires_grad_(True)
            start_loss = self._classification_loss(model, model(leaf), y)
            shared = penalty_due and not use_sub
            (gradient,) = torch.autograd.grad(start_loss, leaf, create_graph=shared)
            bias = self._check_bias(frequency_bias(gradient)) if shared else None
            if use_sub:  # penalty from a separate forward of the first k start points (see `sub_batch`)
                k = self.sub_batch
                _, bias = self._jacobian_penalty(model, start[:k], y[:k], k / n)
            delta = torch.clamp(start.detach() - x + step_size * gradient.detach().sign(), -epsilon, epsilon)
            x_adv = torch.clamp(x + delta, 0, 1)
            logits = model(x_adv)
            base = self._classification_loss(model, logits, y)
            penalty = -self.lambda_freq * bias if bias is not None else base.new_zeros(())
            total = base + penalty.to(base.dtype) if bias is not None else base
        return JaFROutput(
            loss=total,
            base_loss=base.detach(),
            frequency_bias=None if bias is None else bias.detach(),
            penalty=penalty,
            logits=logits.detach(),
            input_gradient=gradient.detach(),
            adversarial_inputs=x_adv.detach(),
        )
