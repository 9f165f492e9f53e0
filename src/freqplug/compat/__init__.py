"""freqplug.compat: make host libraries work from a plain registry install.

``install_autoattack()`` registers an ``autoattack`` module with the official AutoAttack
API (backed by :class:`freqplug.eval.AutoAttackRunner`) so that ``import robustbench`` and
``robustbench.eval.benchmark`` work without the git-only official package.
"""

from .autoattack import install_autoattack, is_shim, uninstall_autoattack

__all__ = ["install_autoattack", "is_shim", "uninstall_autoattack"]
