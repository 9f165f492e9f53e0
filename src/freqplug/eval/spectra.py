"""Spectra of adversarial perturbations (Wang2020a Fig. 2: RCT maps; Luo2024 Fig. 2: spectral SNR).

:func:`attack_spectra` runs attacks and measures their perturbations with the one spectrum measure,
:func:`freqplug.eval.perturbation_spectrum`.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Union

import torch
from torchattacks.attack import Attack

from .._model import num_classes_of, predict, preserved_model_state
from .._validation import check_images, check_labels, check_positive_int
from ..attacks._base import targets_checked
from .frequency import perturbation_spectrum

__all__ = ["attack_spectra", "plot_attack_spectra"]

AttacksSpec = Union[Mapping[str, Attack], Sequence[Attack]]


def attack_spectra(model, attacks: AttacksSpec, x: torch.Tensor, y: torch.Tensor, *,
                   batch_size: int = 256) -> Dict[str, Dict[str, object]]:
    """Run every attack once and measure where its perturbation lives in frequency.

    Checks before any attack runs: ``x``, ``y``, and one forward of ``x[:1]`` (finite logits, ``y``
    inside the model's output width); targets an attack's targeted mode makes are checked too.
    Works under ``torch.no_grad()`` (the attacks run with gradients enabled).

    Cost: 1 + per attack its own evaluations + ``N`` (the error rate), in chunks of ``batch_size``.

    Args:
        model: the classifier (inputs in [0, 1]), used for the error rates; the attacks carry
            their own model (normally the same one). Its state is restored.
        attacks: a dict name -> torchattacks attack, or a list (named by ``attack.attack``, with a
            suffix when a name repeats).
        x, y: images (N, C, H, W) in [0, 1] and labels (N,).
        batch_size: images per forward call of the error-rate evaluation.

    Returns:
        ``{name: {"rct": (H, W), "snr": (R,), "snr_db": (R,), "error_rate": float, "linf": float}}``:
        ``rct`` and ``snr`` are :func:`freqplug.eval.perturbation_spectrum` over every image
        (``only_perturbed=False``): the Relative Change in DCT ``mean |DCT(x_adv) - DCT(x)| / |DCT(x)|``
        per coefficient (Wang2020a eq. 8, orthonormal DCT, (0, 0) = DC, low frequencies top-left) and
        ``ESD_r(x) / ESD_r(delta)`` per integer radius r of the DFT (Luo2024 eq. 1, averaged over images
        and channels; inf where delta has no energy); ``error_rate`` the model's error on ``x_adv``;
        ``linf`` the largest |delta|.

    Shape:
        - x: :math:`(N, C, H, W)`; y: :math:`(N)`; rct: :math:`(H, W)`; snr: :math:`(R)`.
    """
    check_images(x, "x")
    check_labels(y, "y", x.shape[0])
    batch_size = check_positive_int(batch_size, "batch_size")
    named = _named_attacks(attacks)
    results = {}
    labels = y.detach().cpu()
    with preserved_model_state(model):
        num_classes = num_classes_of(model, x, labels=y, labels_name="y")
        for name, attack in named.items():
            with torch.enable_grad(), targets_checked(attack, num_classes):
                adv = attack(x, y).detach().to(device=x.device, dtype=x.dtype)
            delta = adv - x
            predictions = predict(model, adv, batch_size=batch_size, labels=y, labels_name="y")
            error = float((predictions != labels).float().mean())
            rct, snr = perturbation_spectrum(x, adv, only_perturbed=False)
            results[name] = {
                "rct": rct,
                "snr": snr,
                "snr_db": 10 * torch.log10(snr),
                "error_rate": error,
                "linf": float(delta.abs().max()),
            }
    return results


def _named_attacks(attacks: AttacksSpec) -> Dict[str, Attack]:
    if isinstance(attacks, Mapping):
        items = list(attacks.items())
    elif isinstance(attacks, (list, tuple)):
        items, seen = [], {}
        for attack in attacks:
            base = getattr(attack, "attack", type(attack).__name__)
            seen[base] = seen.get(base, 0) + 1
            items.append((base if seen[base] == 1 else f"{base}-{seen[base]}", attack))
    else:
        raise TypeError(f"`attacks` must be a dict name -> attack or a list of attacks, got {type(attacks).__name__}")
    if not items:
        raise ValueError("`attacks` must hold at least one attack")
    for name, attack in items:
        if not isinstance(attack, Attack):
            raise TypeError(f"`attacks[{name!r}]` must be a torchattacks.Attack, got {type(attack).__name__}")
    return dict(items)


def plot_attack_spectra(spectra: Mapping[str, Mapping[str, object]], path: Optional[str] = None, *,
                        log_rct: bool = True):
    """Plot :func:`attack_spectra`: one RCT map per attack and the spectral SNR curves (dB).

    Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global backend
    change). Returns the ``matplotlib.figure.Figure``; saves it to ``path`` (PNG etc.) when given.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    if not spectra:
        raise ValueError("`spectra` is empty")
    names = list(spectra)
    figure = Figure(figsize=(3.2 * (len(names) + 1), 3.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(names) + 1, squeeze=False)[0]
    for axis, name in zip(axes, names):
        rct = spectra[name]["rct"].detach().cpu().double()
        norm = LogNorm(vmin=max(float(rct[rct > 0].min()) if bool((rct > 0).any()) else 1e-6, 1e-6),
                       vmax=max(float(rct.max()), 1e-5)) if log_rct else None
        image = axis.imshow(rct.clamp_min(1e-6).numpy() if log_rct else rct.numpy(), cmap="viridis", norm=norm)
        axis.set_title(f"RCT: {name}")
        axis.set_xlabel("DCT column (low -> high)")
        axis.set_ylabel("DCT row (low -> high)")
        figure.colorbar(image, ax=axis, shrink=0.8).set_label("RCT (log scale)" if log_rct else "RCT", fontsize=8)
    snr_axis = axes[-1]
    for name in names:
        snr_db = spectra[name]["snr_db"].detach().cpu().double()
        snr_axis.plot(range(snr_db.shape[0]), snr_db.numpy(), marker="o", markersize=3, label=name)
    snr_axis.set_title("spectral SNR")
    snr_axis.set_xlabel("radius (DFT bins)")
    snr_axis.set_ylabel("ESD(x) / ESD(delta) [dB]")
    snr_axis.legend(fontsize=7)
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure
