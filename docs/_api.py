"""Writes one reStructuredText page per public package from its ``__all__`` (used by conf.py and the tests)."""

from __future__ import annotations

import importlib
import inspect
import types
from pathlib import Path
from typing import Dict, List, Tuple


def public_packages() -> List[str]:
    """``freqplug`` and every subpackage that ``freqplug.__all__`` exports."""
    import freqplug

    return ["freqplug"] + sorted(f"freqplug.{name}" for name in freqplug.__all__
                                 if isinstance(getattr(freqplug, name), types.ModuleType))


def public_objects() -> List[Tuple[str, str, object]]:
    """``(package, name, object)`` for every name in the public packages' ``__all__``."""
    found = []
    for package in public_packages():
        module = importlib.import_module(package)
        for name in module.__all__:
            found.append((package, name, getattr(module, name)))
    return found


def _directive(obj: object) -> str:
    if inspect.isclass(obj):
        return "autoclass"
    if callable(obj):
        return "autofunction"
    return "data"


def constant_doc(package: str, name: str) -> List[str]:
    """The ``#:`` comment documenting constant ``name`` of ``package``, searched in freqplug's modules.

    Looked up where the name is defined (the package's lazy table, or the package), then in every module of the
    package (a constant re-exported through an intermediate module is documented where it is assigned).
    Names computed on access are documented in their package's docstring, which is returned as a fallback marker.
    """
    from sphinx.pycode import ModuleAnalyzer

    module = importlib.import_module(package)
    candidates = []
    target = getattr(module, "_LAZY", {}).get(name)
    if target:
        candidates.append(importlib.import_module(target, package).__name__)
    candidates.append(package)
    folder = Path(module.__file__).parent
    candidates += [f"{package}.{path.stem}" for path in sorted(folder.glob("*.py")) if path.stem != "__init__"]
    for candidate in candidates:
        try:
            docs = ModuleAnalyzer.for_module(candidate).find_attr_docs()
        except Exception:  # a module that cannot be analysed documents nothing
            continue
        if ("", name) in docs:
            return [line for line in docs[("", name)] if line.strip()]
    if f"``{name}``" in (module.__doc__ or ""):
        return [f"See the description of :py:mod:`{package}` above."]
    return []


def write_pages(folder: Path) -> Dict[str, str]:
    """Write ``folder/<package>.rst`` and ``folder/index.rst``; returns ``{object id: documented name}``.

    Each object is documented once, under the subpackage that defines it; the top-level ``freqplug`` page and
    later re-exports link to that entry (Sphinx refuses two descriptions of one object).
    """
    folder.mkdir(parents=True, exist_ok=True)
    documented: Dict[int, str] = {}
    pages = {}
    extra: List[str] = []
    # Subpackages first, so that an object is described where it lives, and the top level links to it.
    order = [p for p in public_packages() if p != "freqplug"] + ["freqplug"]
    for package in order:
        module = importlib.import_module(package)
        lines = [package, "=" * len(package), "", f".. automodule:: {package}", "    :no-members:", ""]
        for name in sorted(module.__all__, key=str.lower):
            obj = getattr(module, name)
            if name == "__version__":
                lines += [f"``{package}.__version__`` is the installed version (``{obj}``).", ""]
                continue
            if isinstance(obj, types.ModuleType):
                if obj.__name__ not in public_packages():  # a public module inside a package: its own page
                    extra.append(obj.__name__)
                lines += [f"* ``{name}``: :doc:`{obj.__name__}`", ""]
                continue
            key = id(obj)
            if key in documented and (inspect.isclass(obj) or callable(obj)):
                lines += [f"* ``{package}.{name}``: the same object as :py:obj:`{documented[key]}`", ""]
                continue
            directive = _directive(obj)
            lines += [f".. {directive}:: {package}.{name}"]
            if directive == "autoclass":
                lines += ["    :members:"]
            if directive == "data":
                lines += ["", *(f"    {line}" for line in constant_doc(package, name))]
            lines += [""]
            documented[key] = f"{package}.{name}"
        (folder / f"{package}.rst").write_text("\n".join(lines))
        pages[package] = package
    for name in extra:  # documented where they live; :no-index: as their public records are described above
        lines = [name, "=" * len(name), "", f".. automodule:: {name}", "    :members:", "    :no-index:", ""]
        (folder / f"{name}.rst").write_text("\n".join(lines))
    toc = ["API reference", "=============", "", ".. toctree::", "    :maxdepth: 1", ""]
    toc += [f"    {package}" for package in ["freqplug"] + order[:-1] + extra]
    (folder / "index.rst").write_text("\n".join(toc) + "\n")
    return {str(k): v for k, v in documented.items()}
