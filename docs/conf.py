"""Sphinx configuration: the API reference is generated from the docstrings of what freqplug exports.

`make test` builds it with warnings as errors (``sphinx-build -W -q -b html docs docs/_build/html``), so a
broken docstring fails CI. The pages under ``api/`` are written at build time from ``freqplug.__all__`` and each
public subpackage's ``__all__`` (see ``_api.py``): a new public name appears without editing the docs.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # document the checkout, also without an install
sys.path.insert(0, str(HERE))

import _api  # noqa: E402

import freqplug  # noqa: E402

project = "freqplug"
author = "the freqplug developers"
copyright = "2026, the freqplug developers"
release = freqplug.__version__
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Attributes sections become fields of the class, not a second description of each dataclass field.
napoleon_use_ivar = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"undoc-members": False}
# Optional packages may be absent where the docs are built; documenting must not need them.
autodoc_mock_imports = []
exclude_patterns = ["_build"]
html_theme = "alabaster"
nitpicky = False


#: Docstrings that are not valid reStructuredText yet, shown verbatim (a literal block) until their owners fix them;
#: remove an entry once fixed (the build then checks that docstring again).
VERBATIM_DOCSTRINGS: set = set()


def _escape_bars(app, what, name, obj, options, lines):
    if name in VERBATIM_DOCSTRINGS:
        lines[:] = ["::", ""] + [f"    {line}" for line in lines]
        return
    # The docstrings are written for help() readers and use |x| for absolute values and norms, which
    # reStructuredText would read as substitution references. No docstring here means an RST substitution.
    for i, line in enumerate(lines):
        lines[i] = line.replace("\\|", "|").replace("|", "\\|")


def setup(app):
    app.connect("builder-inited", lambda app: _api.write_pages(HERE / "api"))
    app.connect("autodoc-process-docstring", _escape_bars)
