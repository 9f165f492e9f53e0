"""Lazy package attributes (PEP 562): a name is imported from its submodule on first use.

``import freqplug`` then costs only what it reads: a user of the attributions never imports torchattacks,
scipy, matplotlib or robustbench, and ``freqplug --version`` does not import torch. Every package
``__init__`` lists its public names in one explicit table ``{name: submodule}``; :func:`attach` returns the
module's ``__getattr__`` and ``__dir__``.
"""

from __future__ import annotations

import importlib
from typing import Callable, Dict, Iterable, List, Optional, Tuple


def attach(package: str, names: Dict[str, str], *, fallback: Optional[Callable[[str], object]] = None
           ) -> Tuple[Callable[[str], object], Callable[[], List[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package``.

    Args:
        package: the package's ``__name__``.
        names: public name -> submodule, relative to ``package`` (``".frequency_shapley"``) or absolute.
            A name whose submodule is ``"."`` plus the name itself is the submodule (``"attacks": ".attacks"``
            at the top level imports the subpackage).
        fallback: called with names outside the table (deprecated aliases, computed names); it raises
            ``AttributeError`` for unknown ones. Without it, unknown names raise ``AttributeError``.

    Returns:
        ``(__getattr__, __dir__)`` to assign in the package's ``__init__``.
    """
    module = importlib.import_module(package)
    namespace = vars(module)

    def __getattr__(name: str) -> object:
        target = names.get(name)
        if target is None:
            if fallback is not None:
                return fallback(name)
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            submodule = importlib.import_module(target, package)
        except ModuleNotFoundError as error:
            raise _missing_extra(error, f"{package}.{name}") from error
        if submodule.__name__.rpartition(".")[2] == name:
            value = submodule  # the name is the subpackage/submodule itself
        else:
            value = getattr(submodule, name)
        # Cached as a plain attribute: later reads do not come back here. Setting it after the import also
        # repairs a submodule that shares the name (the import system binds the module object there).
        namespace[name] = value
        return value

    def __dir__() -> List[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__


def _missing_extra(error: ModuleNotFoundError, what: str) -> ModuleNotFoundError:
    """The error for a public name whose module needs an optional package that is not installed.

    Names the extra that installs the package (``freqplug._optional.EXTRAS``); other missing modules keep their
    own error.
    """
    from ._optional import EXTRAS

    top = (error.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return error
    return ModuleNotFoundError(f"{what} needs the optional package {top!r}, which is not installed here; install "
                               f"it with: pip install \"freqplug[{extra}]\"", name=error.name)


def names_from(table: Dict[str, Iterable[str]]) -> Dict[str, str]:
    """``{submodule: [names]}`` -> ``{name: submodule}``, refusing a name listed under two submodules."""
    flat: Dict[str, str] = {}
    for submodule, names in table.items():
        for name in names:
            if name in flat:
                raise ValueError(f"{name!r} is listed under both {flat[name]!r} and {submodule!r}")
            flat[name] = submodule
    return flat
