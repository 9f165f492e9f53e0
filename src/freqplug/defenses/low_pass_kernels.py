r"""D2 of Wang2020b (Wang et al. 2020, §3.3): low-pass the first convolution kernels instead of the input.

For the first convolution ``conv(x, w)`` the paper replaces every kernel ``w_i`` by the real part of
``IDFT(t(DFT(w_i), r))`` (``t`` keeps the bins within radius r) and leaves the rest of the model
unchanged. Theorem 1 claims ``f_D2(x) == f(LFC(x, r))``. Its proof uses the convolution theorem,
so the equality is exact only when the convolution *is* the product of the DFTs on the image's grid:

1. the convolution is circular over the image: ``padding_mode="circular"`` with ``padding = k // 2``
   and an odd kernel size k (output aligned with the input), dilation 1; any stride (a strided
   convolution is the stride-1 one subsampled, and subsampling commutes with nothing that matters
   here), any ``groups``, any bias (the bias is the output's DC and the mask keeps DC);
2. the kernel is low-passed on the *image's* frequency grid: zero-padded to H x W, masked with the same
   radius as the input would be, and used as an H x W circular kernel (``grid="input"``). Low-passing
   the k x k kernel on its own k x k grid (``grid="kernel"``, what the paper's D2 does in practice)
   is the same thing only when k == H == W;
3. the convolution sees the input directly: anything before it must commute with the low-pass
   (a per-channel affine normalization does, since the mask keeps DC); only the first convolution is
   covered. Later layers (``radius`` given as a list) follow nonlinearities, so D2 on them is a
   heuristic, as the paper says.

With zero padding (PyTorch's default, ResNet's), the two differ near the borders; with ``grid="kernel"``
and k < H the kernel's grid is coarser than the image's (a 3 x 3 kernel has frequencies -1, 0, 1
only: r <= 1 keeps DC alone, 1 < r <= sqrt(2) adds the four axis bins, larger r keeps all).

"Keeping the real part": freqplug's radial masks are conjugate-symmetric (a bin and its mirror share
their radius), so the low-passed kernel is real and the imaginary part the paper discards is exactly 0.
"""

from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._model import preserved_model_state
from .._validation import check_choice, check_number, check_positive_int
from ..spectral import apply_spectral_mask, radial_mask

__all__ = ["low_pass_kernels", "low_pass_kernel_weights"]

GRIDS = ("kernel", "input")


def low_pass_kernel_weights(weight: torch.Tensor, radius: float) -> torch.Tensor:
    """Low-pass convolution kernels on their own grid: ``Re(IDFT(t(DFT(w), r)))`` per kernel.

    Args:
        weight: (out_channels, in_channels / groups, kh, kw).
        radius: bins of the kh x kw grid (strict ``<``, Euclidean, as ``low_high_split``).

    Returns:
        A new tensor of the same shape and dtype.
    """
    check_number(radius, "radius", minimum=0.0, strict_minimum=True)
    mask = radial_mask(weight.shape[-2], weight.shape[-1], radius, keep="below", device=weight.device)
    return apply_spectral_mask(weight.detach(), mask, check_symmetry=False)


def low_pass_kernels(model: nn.Module, radius: Union[float, Sequence[float]], *, grid: str = "kernel",
                     input_size: Optional[Tuple[int, ...]] = None) -> nn.Module:
    """A copy of ``model`` whose first convolution(s) have low-passed kernels (Wang2020b D2).

    Args:
        model: any ``nn.Module`` with ``nn.Conv2d`` layers; it is deep-copied and never modified.
        radius: cut-off in bins for the first convolution, or a list of cut-offs, one for each of
            the first ``len(radius)`` convolutions in ``model.modules()`` order (definition order:
            the paper's "perturb the first k layers" extension).
        grid: ``"kernel"`` (default, the paper's D2): each k x k kernel is low-passed on its own
            k x k grid and keeps its shape; ``"input"``: each kernel is zero-padded to the grid of the
            feature map it sees, low-passed there, and the layer becomes an equivalent circular
            convolution with a full-size kernel, so that Theorem 1 holds exactly (module docstring).
            ``"input"`` needs circular convolutions (``padding_mode="circular"``, ``padding = k // 2``,
            odd k, dilation 1) and ``input_size``.
        input_size: ``(C, H, W)`` or ``(H, W)`` of the model's input, for ``grid="input"`` (the feature
            map size of every chosen convolution is traced with one forward pass of zeros).

    Returns:
        The modified copy, in the train/eval mode of ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be an nn.Module, got {type(model).__name__}")
    check_choice(grid, "grid", GRIDS)
    radii = _as_radii(radius)
    convs = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if len(convs) < len(radii):
        raise ValueError(f"`radius` gives {len(radii)} cut-offs but `model` has only {len(convs)} nn.Conv2d layers")
    chosen = convs[: len(radii)]
    defended = copy.deepcopy(model)
    modules = dict(defended.named_modules())
    if grid == "kernel":
        for name, r in zip(chosen, radii):
            conv = modules[name]
            with torch.no_grad():
                conv.weight.copy_(low_pass_kernel_weights(conv.weight, r))
        return defended

    for name in chosen:
        _check_circular(modules[name], name)
    sizes = _trace_input_sizes(defended, [modules[name] for name in chosen], input_size)
    for name, r, (height, width) in zip(chosen, radii, sizes):
        _replace_module(defended, name, _full_grid_conv(modules[name], r, height, width))
    return defended


def _as_radii(radius) -> List[float]:
    if isinstance(radius, (int, float)) and not isinstance(radius, bool):
        radii = [radius]
    elif isinstance(radius, (list, tuple)) and radius:
        radii = list(radius)
    else:
        raise TypeError(f"`radius` must be a number or a non-empty list of numbers, got {radius!r}")
    return [check_number(r, "radius", minimum=0.0, strict_minimum=True) for r in radii]


def _check_circular(conv: nn.Conv2d, name: str) -> None:
    kh, kw = conv.kernel_size
    problems = []
    if conv.padding_mode != "circular":
        problems.append(f"padding_mode={conv.padding_mode!r} (needs 'circular')")
    if kh % 2 == 0 or kw % 2 == 0:
        problems.append(f"kernel_size={conv.kernel_size} (needs odd sizes)")
    if tuple(conv.padding) != (kh // 2, kw // 2):
        problems.append(f"padding={conv.padding} (needs {(kh // 2, kw // 2)})")
    if tuple(conv.dilation) != (1, 1):
        problems.append(f"dilation={conv.dilation} (needs 1)")
    if problems:
        raise ValueError(f"grid='input' needs circular convolutions; layer {name!r} has " + ", ".join(problems)
                         + ". Use grid='kernel' (the paper's D2) for other layers.")


def _trace_input_sizes(model: nn.Module, convs: List[nn.Conv2d], input_size) -> List[Tuple[int, int]]:
    if input_size is None:
        raise ValueError("grid='input' needs `input_size`, (C, H, W) or (H, W) of the model's input")
    if not isinstance(input_size, (tuple, list)) or len(input_size) not in (2, 3):
        raise ValueError(f"`input_size` must be (C, H, W) or (H, W), got {input_size!r}")
    for value in input_size:
        check_positive_int(value, "input_size")
    if len(input_size) == 2:
        input_size = (convs[0].in_channels, *input_size)
    sizes = {}

    def record(index):
        def hook(module, args):  # returns None: the input passes through unchanged
            sizes.setdefault(index, tuple(args[0].shape[-2:]))
        return hook

    hooks = [conv.register_forward_pre_hook(record(index)) for index, conv in enumerate(convs)]
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = parameter.device if parameter is not None else None
    try:
        with preserved_model_state(model), torch.no_grad():
            model.eval()  # a zeros batch of one must not touch BatchNorm running statistics
            model(torch.zeros(1, *input_size, dtype=dtype, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    missing = [index for index in range(len(convs)) if index not in sizes]
    if missing:
        raise ValueError(f"convolutions {missing} were not called by a forward pass of the model")
    return [sizes[index] for index in range(len(convs))]


def _full_grid_conv(conv: nn.Conv2d, radius: float, height: int, width: int) -> nn.Conv2d:
    """Circular convolution with the kernel low-passed on the (height, width) grid of its input.

    A circular cross-correlation with padding p computes ``y[m] = sum_t c[t] x[(m*s + t) mod H]`` with
    ``c[t] = w[t + p]``; its DFT is ``conj(C) X``, so masking C masks X (Theorem 1). The masked
    ``c`` has full support, stored in a kernel of size 2*(H//2)+1 (offsets -H//2..H//2; for even H the
    offset +H//2 aliases -H//2 and is left zero) with circular padding H//2.
    """
    kh, kw = conv.kernel_size
    if kh > height or kw > width:
        raise ValueError(f"kernel {conv.kernel_size} is larger than its input {height}x{width}")
    weight = conv.weight.detach()
    circular = weight.new_zeros(*weight.shape[:2], height, width)
    rows = (torch.arange(kh) - kh // 2) % height
    cols = (torch.arange(kw) - kw // 2) % width
    circular[:, :, rows[:, None], cols[None, :]] = weight
    circular = apply_spectral_mask(circular, radial_mask(height, width, radius, keep="below", device=weight.device),
                                   check_symmetry=False)
    size_h, size_w = 2 * (height // 2) + 1, 2 * (width // 2) + 1
    offsets_h = (torch.arange(size_h) - height // 2) % height
    offsets_w = (torch.arange(size_w) - width // 2) % width
    full = circular[:, :, offsets_h[:, None], offsets_w[None, :]].clone()
    if height % 2 == 0:
        full[:, :, -1, :] = 0
    if width % 2 == 0:
        full[:, :, :, -1] = 0
    replacement = nn.Conv2d(conv.in_channels, conv.out_channels, (size_h, size_w), stride=conv.stride,
                            padding=(height // 2, width // 2), dilation=1, groups=conv.groups,
                            bias=conv.bias is not None, padding_mode="circular",
                            device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        replacement.weight.copy_(full)
        if conv.bias is not None:
            replacement.bias.copy_(conv.bias)
    replacement.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None:
        replacement.bias.requires_grad_(conv.bias.requires_grad)
    replacement.train(conv.training)
    return replacement


def _replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
