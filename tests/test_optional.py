"""The optional-dependency gate names the extra that installs a missing package."""

import pytest

from freqplug import _optional


def test_require_imports_an_installed_optional_module():
    assert _optional.require("scipy.stats", "a test").__name__ == "scipy.stats"


def test_require_names_the_extra_when_missing(monkeypatch):
    monkeypatch.setitem(_optional.EXTRAS, "freqplug_no_such_package", "shapley")
    with pytest.raises(ImportError, match=r"freqplug\[shapley\]"):
        _optional.require("freqplug_no_such_package", "estimator='tree'")
    assert not _optional.available("freqplug_no_such_package")
    assert _optional.available("torch")


def test_require_refuses_a_module_that_is_not_optional():
    with pytest.raises(ValueError, match="module"):
        _optional.require("os", "a test")
