"""freqplug.defenses: the low-pass defenses of Wang2020b (Wang et al. 2020, §3.3).

- D1 :class:`LowPassFilter`: ``model(low_high_split(x, r)[0])`` as an ``nn.Module``.
- D2 :func:`low_pass_kernels`: a copy of the model with low-passed first convolution kernels.
"""

# Eager on purpose: ``low_pass_kernels`` is both a submodule and the function exported here, and a lazy name
# would be shadowed by the submodule once anything imported it. Both modules need torch only.
from .low_pass_input import LowPassFilter
from .low_pass_kernels import low_pass_kernel_weights, low_pass_kernels

__all__ = ["LowPassFilter", "low_pass_kernel_weights", "low_pass_kernels"]
