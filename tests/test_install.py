"""Install footprint: lazy imports, a torch-free ``--help``/``--version``, a core-only install, the archives."""

import importlib
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

import freqplug
from freqplug import _lazy, _optional

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

#: Packages `import freqplug` must not import (each costs seconds, or belongs to an extra).
HEAVY = ("torch", "captum", "torchattacks", "scipy", "matplotlib", "robustbench", "xgboost", "imagecorruptions",
         "torchvision", "pyautoattack", "autoattack", "timm", "foolbox", "PIL", "sklearn", "numpy")

#: Optional packages (the extras) that the core must work without. matplotlib is not among them: Captum, a core
#: dependency, requires and imports it.
OPTIONAL = ("torchattacks", "scipy", "robustbench", "torchvision", "pyautoattack", "autoattack", "xgboost",
            "imagecorruptions", "foolbox", "sklearn", "timm")

#: A meta-path finder that makes the OPTIONAL packages look uninstalled (a core-only install without a 2nd venv).
BLOCKER = textwrap.dedent(f"""
    import sys
    BLOCKED = {OPTIONAL!r}
    class _Uninstalled:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
            return None
    sys.meta_path.insert(0, _Uninstalled())
""")


def run_python(code: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": f"{SRC}{':' + str(ROOT / 'tests')}", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def public_packages():
    return ["freqplug"] + sorted(f"freqplug.{name}" for name in freqplug.__all__
                                 if isinstance(getattr(freqplug, name), types.ModuleType))


def test_import_freqplug_imports_nothing_heavy_and_one_name_only_its_subpackage():
    out = run_python(f"import sys, freqplug; print(sorted(m for m in {HEAVY!r} if m in sys.modules)); "
                     "freqplug.low_high_split; "
                     "print(sorted(m for m in ('freqplug.spectral', 'freqplug.attributions', 'freqplug.attacks', "
                     "'freqplug.report', 'captum', 'torchattacks') if m in sys.modules))")
    assert out.stdout.split("\n")[:2] == ["[]", "['freqplug.spectral']"]


@pytest.mark.parametrize("argv", [["--version"], ["--help"], []])
def test_cli_version_and_help_do_not_import_torch(argv):
    out = run_python("import sys, contextlib, io\nfrom freqplug.cli import main\n"
                     f"with contextlib.redirect_stdout(io.StringIO()) as text:\n"
                     f"    try:\n        main({argv!r})\n    except SystemExit:\n        pass\n"
                     "print(repr(text.getvalue()[:40]), 'torch' in sys.modules)")
    shown, torch_loaded = out.stdout.strip().rsplit(" ", 1)
    assert torch_loaded == "False"
    assert ("freqplug 0." if argv == ["--version"] else "usage: freqplug") in shown


def test_every_public_name_resolves_is_listed_by_dir_and_unknown_names_raise():
    for package in public_packages():
        module = importlib.import_module(package)
        listed = dir(module)
        for name in module.__all__:
            assert getattr(module, name) is not None, f"{package}.{name}"
            assert name in listed, f"{package}.{name} missing from dir()"
        with pytest.raises(AttributeError, match=f"{package}.*no_such_name"):
            getattr(module, "no_such_name")


def test_lazy_tables_name_what_their_submodules_define():
    # Every entry of every lazy table resolves to the object of that name in that submodule, so the
    # table and the submodules cannot drift apart.
    for package in public_packages():
        module = importlib.import_module(package)
        for name, target in getattr(module, "_LAZY", {}).items():
            submodule = importlib.import_module(target, package)
            expected = submodule if submodule.__name__.rpartition(".")[2] == name else getattr(submodule, name)
            assert getattr(module, name) is expected, f"{package}.{name}"


def test_top_level_reexports_are_the_subpackages_objects():
    import freqplug.attributions
    import freqplug.defenses
    import freqplug.report

    assert freqplug.FrequencyShapley is freqplug.attributions.FrequencyShapley
    # `profile` and `low_pass_kernels` are also submodule names: the function must win.
    assert callable(freqplug.profile) and not isinstance(freqplug.profile, types.ModuleType)
    assert freqplug.report.profile is freqplug.profile
    assert callable(freqplug.defenses.low_pass_kernels)


def test_names_from_refuses_a_name_listed_twice():
    with pytest.raises(ValueError, match="'x' is listed under both"):
        _lazy.names_from({".a": ["x"], ".b": ["x"]})


@pytest.mark.slow
def test_core_works_without_the_optional_packages_and_a_missing_extra_is_named():
    # A core-only install: the optional packages cannot be imported. The attributions, spectral core, defenses
    # and training hooks still work on a tiny real network; attacks and the report fail naming their extra.
    code = BLOCKER + textwrap.dedent("""
        import torch, freqplug
        from helpers import tiny_cnn
        model = tiny_cnn(num_classes=4, seed=0, dtype=torch.float32)
        x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)); y = torch.tensor([0, 3])
        attr = freqplug.FrequencyShapley(model).attribute(x, target=y, players=4, n_samples=2, seed=0)
        assert attr.shape == (2, 8, 8) and torch.isfinite(attr).all()
        low, high = freqplug.low_high_split(x, 2)
        assert torch.allclose(low + high, x, atol=1e-6)
        out = freqplug.JaFRLoss(lambda_freq=0.001)(model, x, y)
        assert torch.isfinite(out.loss)
        assert freqplug.LowPassFilter(model, radius=2)(x).shape == (2, 4)
        for name, extra in (("HFAttack", "attacks"), ("masked_noise_table", "attacks")):
            try:
                getattr(freqplug, name)
            except ImportError as error:
                assert f'freqplug[{extra}]' in str(error), str(error)
            else:
                raise AssertionError(f"freqplug.{name} imported without its extra")
        import sys
        print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
    """)
    assert run_python(code).stdout.strip() == "[]"


def test_optional_gate_knows_every_extra_of_the_pyproject():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(_optional.EXTRAS.values()) <= set(extras)
    for module, extra in _optional.EXTRAS.items():
        assert any(entry.startswith(module) for entry in extras[extra]), f"{module} not in extra {extra!r}"
    core = [entry.split(">")[0].split("!")[0].split("<")[0].split("=")[0] for entry in project["dependencies"]]
    assert core == ["torch", "captum", "numpy", "tqdm"]
    assert all("!=" not in entry and "<" not in entry for entry in project["dependencies"])  # keep the user's torch
    assert {"attacks", "robustbench", "report", "shapley", "corruptions", "docs", "all"} <= set(extras)
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]


def _copy_checkout(destination: Path) -> Path:
    import shutil

    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "_build", "api", "build", "dist",
                                    ".pytest_cache", "freqplug-report")
    shutil.copytree(ROOT, destination, ignore=ignore)
    return destination


@pytest.mark.slow
def test_sdist_carries_the_tests_and_the_wheel_installs_and_runs_freqplug_profile(tmp_path):
    import tarfile
    import zipfile

    # The PEP 517 hooks of setuptools, in a copy of the checkout (no network, no build isolation).
    source = _copy_checkout(tmp_path / "src-copy")
    dist = tmp_path / "dist"
    build = ("import sys\nfrom setuptools import build_meta as backend\n"
             f"names = backend.build_sdist({str(dist)!r}), backend.build_wheel({str(dist)!r})\n"
             "print('BUILT', *names)")
    out = subprocess.run([sys.executable, "-c", build], capture_output=True, text=True, cwd=source, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    sdist_name, wheel_name = next(line for line in out.stdout.splitlines() if line.startswith("BUILT ")).split()[1:]

    with tarfile.open(dist / sdist_name) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("LICENSE", "tests/conftest.py", "tests/helpers/__init__.py", "tests/helpers/nets.py",
                   "tests/test_install.py", "docs/conf.py", "src/freqplug/py.typed", "pyproject.toml"):
        assert needed in names, f"{needed} missing from the source archive"
    assert not any("__pycache__" in name or name.startswith("docs/_build") for name in names)

    with zipfile.ZipFile(dist / wheel_name) as wheel:
        listing = wheel.namelist()
        metadata = wheel.read(next(n for n in listing if n.endswith(".dist-info/METADATA"))).decode()
    assert "freqplug/py.typed" in listing
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in listing)
    assert "License-Expression: MIT" in metadata
    assert not any(n.startswith("tests/") for n in listing)  # tests travel in the sdist, not the wheel
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert [r.split()[1].rstrip(">=<!0123456789.,") for r in requires] == ["torch", "captum", "numpy", "tqdm"]

    # Install the wheel alone (its dependencies come from this environment) and run its console script.
    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target",
                          str(target), str(dist / wheel_name)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    env = {"PYTHONPATH": str(target), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    report = tmp_path / "report"
    out = subprocess.run([str(target / "bin" / "freqplug"), "profile", "--only", "clean_accuracy", "--quiet",
                          "--out", str(report)], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = __import__("json").loads((report / "metrics.json").read_text())
    assert metrics["models"]["embedded"]["clean_accuracy"] == {"accuracy": 1.0, "n_correct": 20}
    where = subprocess.run([sys.executable, "-c", "import freqplug; print(freqplug.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path)
    assert where.stdout.strip().startswith(str(target))
