"""Command line: ``freqplug <command>`` (also ``python -m freqplug <command>``).

This module only parses and dispatches, and imports nothing heavy before the arguments are parsed:
``freqplug --help`` and ``freqplug --version`` do not import torch; the stage and threat-model names are read from
the library only when an option needs them (a value to check, or ``freqplug profile --help``).
Models are loaded by :func:`freqplug.models.load_model_spec`,
images by :func:`freqplug.data.load_data` and the report is :func:`freqplug.profile`, so Python users
get the same models, images and labels as the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, List, Optional

from .._version import __version__

DATASETS = ("cifar10", "cifar100", "imagenet", "mnist", "fashion_mnist")


def __getattr__(name: str):
    # The stage names live in the report's registry; `_STAGES` is kept for code that read it here.
    if name == "_STAGES":
        from ..report import STAGES

        return tuple(STAGES)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _LazyChoices:
    """The choices of an option, read from the library the first time argparse needs them.

    argparse only tests membership (a value given on the command line) or iterates (an error message, ``--help``),
    so parsing ``--version`` or a command's other options never imports the torch-heavy registry behind them.
    """

    def __init__(self, load):
        self._load = load
        self._names = None

    def _get(self):
        if self._names is None:
            self._names = tuple(self._load())
        return self._names

    def __contains__(self, value) -> bool:
        return value in self._get()

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


def _stage_names():
    from ..report import STAGES
    return STAGES


def _threat_models():
    from ..models import THREAT_MODELS
    return THREAT_MODELS


class UsageError(Exception):
    """A bad argument: reported as one line on stderr, exit status 2, no traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        print(f"{self.prog}: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


# ------------------------------------------------------------------------------------ argument types
# argparse turns the ArgumentTypeError of a type function into the one-line error above.
def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if not 0 <= value < 2**63:  # torch.manual_seed's range
        raise argparse.ArgumentTypeError(f"must be a non-negative integer below 2**63, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    """A finite number > 0; a fraction such as ``8/255`` is read exactly."""
    try:
        value = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"must be a positive number (e.g. 0.5 or 8/255), got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text!r}")
    return value


def _dataset(text: str) -> str:
    if text not in DATASETS:
        raise argparse.ArgumentTypeError(f"unknown --dataset {text!r}; choose one of {', '.join(DATASETS)}")
    return text


def _smoke(args: argparse.Namespace) -> int:
    from .smoke import run_smoke

    run_smoke(radii=args.radii, out=sys.stdout)
    return 0


# ---------------------------------------------------------------------------------------------- profile
def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".freqplug-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write the report to {str(out)!r} ({error.strerror or error}); "
                         "choose a writable folder with --out DIR") from None


def _read_classes(path: Optional[str]):
    """``--classes FILE``: a JSON object {folder: label} or list of names, or a text file with one name a line."""
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--classes {path!r} is not a file")
    text = file.read_text()
    try:
        classes = json.loads(text)
    except ValueError:
        classes = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(classes, (dict, list)) or not classes:
        raise UsageError(f"--classes {path!r} must hold a JSON object {{folder name: label}}, a JSON list of class "
                         "names, or one class name a line")
    return classes


def _load_data(args, models=None):
    from ..data import load_data
    from ..models.loading import data_preprocessing

    # ImageNet images are preprocessed as the RobustBench models need (their zoo entry), as robustbench's benchmark.
    preprocessing = (data_preprocessing(models.values(), args.dataset)
                     if models and args.data_dir is not None else None)
    loaded = load_data(args.data_dir, dataset=args.dataset, n=args.n_examples, classes=_read_classes(args.classes),
                       preprocessing=preprocessing)
    wanted = args.n_examples
    if wanted is not None and loaded.x.shape[0] < wanted:
        what = f"the embedded {args.dataset} sample" if args.data_dir is None else f"--data-dir {args.data_dir!r}"
        print(f"freqplug profile: note: {what} has {loaded.x.shape[0]} images, fewer than {wanted}", file=sys.stderr)
    return loaded


def _model_specs(args) -> List[tuple]:
    """``(spec, where)`` of every model: the ``--model`` options, then the lines of ``--models-file``.

    A models file has one spec a line (as ``--model`` takes them); blank lines and lines starting with ``#`` are
    ignored. A spec given twice is refused, naming both places.
    """
    specs = [(spec, f"--model {spec!r}") for spec in (args.model or [])]
    path = getattr(args, "models_file", None)
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise UsageError(f"--models-file {path!r} is not a file")
        try:
            lines = file.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise UsageError(f"--models-file {path!r} cannot be read ({_one_line(error)})") from None
        listed = [(line.strip(), f"--models-file {path!r} line {number}") for number, line in enumerate(lines, 1)
                  if line.strip() and not line.strip().startswith("#")]
        if not listed:
            raise UsageError(f"--models-file {path!r} lists no model (one model spec a line, as --model takes "
                             "them; blank lines and # comments are ignored)")
        specs += listed
    seen: Dict[str, str] = {}
    for spec, where in specs:
        if spec in seen:
            if where.startswith("--model ") and seen[spec].startswith("--model "):
                raise UsageError(f"--model {spec!r} is given twice")
            raise UsageError(f"{where}: model {spec!r} is already given ({seen[spec]})")
        seen[spec] = where
    return specs or [("embedded", "the default model")]


class _SpecLoader:
    """Zero-argument loader of one model spec, for :func:`freqplug.profile`'s lazily loaded zoo models."""

    def __init__(self, spec: str, name: str, args):
        self.spec, self.name = spec, name
        self.options = dict(dataset=args.dataset, threat_model=args.threat_model, model_dir=args.model_dir,
                            device=args.device)

    def __call__(self):
        from ..models import load_model_spec

        loaded = load_model_spec(self.spec, **self.options)
        if loaded.name != self.name:  # the spec now names another model (e.g. a file replaced by a folder)
            raise ValueError(f"model spec {self.spec!r} loaded as {loaded.name!r}, expected {self.name!r}")
        return loaded.model

    def __repr__(self) -> str:
        return f"_SpecLoader({self.spec!r})"


def _load_models(args) -> Dict[str, Any]:
    """``{name: LoadedModel}`` of the models to profile. With several models (a zoo) each one is loaded once here
    (so a bad spec fails before anything is computed, and its source is recorded), then released: its
    ``LoadedModel.model`` is a loader (:class:`_SpecLoader`) that :func:`freqplug.profile` calls when the model's
    turn comes, so only one model is in memory at a time."""
    import gc

    from ..models import LoadedModel, load_model_spec

    specs = _model_specs(args)
    loaded: Dict[str, Any] = {}
    where_of: Dict[str, str] = {}
    for spec, where in specs:
        try:
            item = load_model_spec(spec, dataset=args.dataset, threat_model=args.threat_model,
                                   model_dir=args.model_dir, device=args.device)
        except (ValueError, TypeError, OSError, ImportError) as error:
            raise UsageError(f"{where}: {_one_line(error)}" if getattr(args, "models_file", None) else
                             _one_line(error)) from None
        if item.name in loaded:
            raise UsageError(f"--model {spec!r} is given twice" if where.startswith("--model ")
                             and where_of[item.name].startswith("--model ") else
                             f"{where}: model {spec!r} has the name {item.name!r} of {where_of[item.name]}")
        where_of[item.name] = where
        if len(specs) > 1:
            item = LoadedModel(item.name, _SpecLoader(spec, item.name, args), item.source)
            gc.collect()
        loaded[item.name] = item
    return loaded


def profile_arguments(args: argparse.Namespace, models: Dict[str, Any], data) -> Dict[str, Any]:
    """The keyword arguments ``freqplug profile`` passes to :func:`freqplug.profile`.

    Args:
        args: parsed command line.
        models: ``{name: LoadedModel}`` from :func:`freqplug.models.load_model_spec` (for a zoo, ``model`` is a
            zero-argument loader, see :func:`_load_models`).
        data: :class:`freqplug.data.LoadedData` from :func:`freqplug.data.load_data`.

    Returns:
        ``{"model", "x", "y", "out", ..., "threat_model", "eps", "metadata", "cache_dir", "model_reports",
        "distribute", "ranks_per_model", "overrides"}``; ``metadata`` records the data source (with the
        class-folder mapping) and every model's source; with several models one report per model is written too.
    """
    metadata = {"command": "freqplug profile", "data": data.source,
                "models": {name: item.source for name, item in models.items()}}
    out = Path(args.out)
    return dict(model={name: item.model for name, item in models.items()}, x=data.x, y=data.y, out=out,
                preset=args.preset, stages=args.only, skip=args.skip or (), device=args.device, force=args.force,
                quiet=args.quiet, seed=args.seed, threat_model=args.threat_model, eps=args.eps, metadata=metadata,
                cache_dir=out / "cache", model_reports=len(models) > 1,
                distribute=getattr(args, "distribute", "images"),
                ranks_per_model=getattr(args, "ranks_per_model", None) or 1, overrides=_overrides(args))


def _overrides(args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """The preset settings the command line changes (``--shard-size``)."""
    shard_size = getattr(args, "shard_size", None)
    return None if shard_size is None else {"shard_size": shard_size}


def _estimate(args: argparse.Namespace) -> int:
    """``freqplug profile --estimate``: the cost table of the run the other options describe; nothing is loaded
    (no weights, no images) and nothing is computed. Image shape and classes come from --dataset."""
    import os

    from ..data import class_names
    from ..data.folders import _MODE, _SIZE
    from ..report import estimate_cost

    size = _SIZE[args.dataset]
    shape = (1 if _MODE.get(args.dataset) == "L" else 3, size, size)
    # without --n-examples profile gets the 20 embedded sample images, or the loader's default 100 from --data-dir
    n_images = args.n_examples or (20 if args.data_dir is None else 100)
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    try:
        models = len(_model_specs(args))  # --model options and the lines of --models-file
        estimate = estimate_cost(args.preset, n_images=n_images, image_shape=shape,
                                 num_classes=len(class_names(args.dataset)), stages=args.only, skip=args.skip or (),
                                 world_size=world_size, threat_model=args.threat_model, eps=args.eps,
                                 overrides=_overrides(args))
    except (ValueError, TypeError, ImportError, UsageError) as error:
        print(f"freqplug profile --estimate: error: {_one_line(error)}", file=sys.stderr)
        return 2
    print(f"dataset {args.dataset}\n{estimate.format()}")
    if models > 1:
        bound = "" if estimate.exact else "<= "
        print(f"{models} models: {bound}{models * estimate.total:,} model evaluations")
    return 0


def _profile(args: argparse.Namespace) -> int:
    import torch

    if getattr(args, "estimate", False):
        return _estimate(args)
    from .. import _distributed as distributed

    started = distributed.init_from_env()
    try:
        try:
            out = Path(args.out)
            if distributed.is_writer():
                _check_writable(out)  # first: nothing is loaded or computed for a report that cannot be written
            if args.eps is not None and args.threat_model.startswith("corruptions"):
                raise UsageError(f"--eps applies to the Linf and L2 threat models, not to {args.threat_model!r}")
            _check_distribution(args, distributed)
            args.device = distributed.local_device(args.device)  # "cuda" under torchrun: cuda:$LOCAL_RANK
            if args.device is not None:
                try:
                    torch.empty(0, device=torch.device(args.device))
                except (RuntimeError, AssertionError) as error:
                    raise UsageError(f"--device {args.device!r} is not usable here ({_one_line(error)}); "
                                     "try --device cpu") from None
            with warnings.catch_warnings():
                # robustbench/timm/torch.jit print import-time deprecation notices; they are not the user's
                # business and would break the one-line error contract.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                warnings.filterwarnings("ignore", message=".*pkg_resources.*")
                try:
                    models = _load_models(args)
                    data = _load_data(args, models)
                except (ValueError, TypeError, OSError, ImportError) as error:
                    raise UsageError(_one_line(error)) from None
            kwargs = profile_arguments(args, models, data)
        except UsageError as error:
            print(f"freqplug profile: error: {error}", file=sys.stderr)
            return 2
        from ..report import profile

        try:
            with _stage_log_lines(enabled=not args.quiet and not sys.stderr.isatty()):
                result = profile(**kwargs)
        except KeyboardInterrupt:
            print(f"freqplug profile: interrupted; finished stages are cached in {out / 'cache'}, rerun to resume",
                  file=sys.stderr)
            return 130
        if distributed.is_writer() and not args.quiet:
            cached = sum(len(v) for v in result.cached.values())
            print(f"report: {out / 'report.html'} ({out / 'report.md'}, {out / 'metrics.json'})"
                  + (f"; one report per model in {out / 'models'}" if len(result.metrics["models"]) > 1 else "")
                  + (f"; {cached} stage(s) reused from the cache" if cached else ""))
        return 0
    finally:
        if started:
            torch.distributed.destroy_process_group()


def _check_distribution(args, distributed) -> None:
    """``--distribute``/``--ranks-per-model`` against the number of processes torchrun started."""
    import torch

    processes = torch.distributed.get_world_size() if distributed.active() else 1
    group = args.ranks_per_model
    if group is not None and args.distribute != "models":
        raise UsageError("--ranks-per-model applies to --distribute models (with --distribute images every model "
                         "is sharded over all processes)")
    if group is not None and processes % group:
        raise UsageError(f"--ranks-per-model {group} must divide the number of processes ({processes})")


@contextlib.contextmanager
def _stage_log_lines(enabled: bool):
    """Off a terminal (a log file, a cluster job) the report draws no progress bars and logs one line per
    stage on the ``freqplug`` logger: show those lines on stderr for the duration of the command."""
    if not enabled:
        yield
        return
    logger = logging.getLogger("freqplug")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _add_profile(commands) -> None:
    stage_choices, threat_model_choices = _LazyChoices(_stage_names), _LazyChoices(_threat_models)

    profile = commands.add_parser(
        "profile", help="profile a model's frequency robustness and write a report with plots",
        description="Measure clean and robust accuracy, masked-noise errors, band and frequency Shapley values, "
                    "B_low of input Jacobians, the HF attack and occluded-frequency scores; write report.md, "
                    "report.html, metrics.json and PNG plots into --out. The same loaders are "
                    "freqplug.models.load_model_spec and freqplug.data.load_data in Python.")
    profile.add_argument("--model", action="append", metavar="MODEL",
                         help="'embedded' (default: the CIFAR-10 ResNet-18), a RobustBench model name, a TorchScript "
                              "or pickled-module file, or module:callable (module importable from the current "
                              "folder); repeat to compare models")
    profile.add_argument("--models-file", default=None, metavar="FILE",
                         help="a zoo: one model spec a line (as --model takes them; blank lines and # comments "
                              "ignored), profiled one model at a time into one comparison report plus one report "
                              "per model in OUT/models/; a killed run resumes from the cache")
    profile.add_argument("--distribute", choices=("images", "models"), default="images",
                         help="under torchrun: 'images' shards every model's images over all processes; 'models' "
                              "gives whole models to groups of --ranks-per-model processes (default: %(default)s)")
    profile.add_argument("--ranks-per-model", type=_positive_int, default=None, metavar="G",
                         help="processes per model with --distribute models; must divide the number of processes "
                              "(default: 1)")
    profile.add_argument("--model-dir", default="./models", help="RobustBench checkpoint folder (default: %(default)s)")
    profile.add_argument("--dataset", default="cifar10", type=_dataset,
                         help=f"one of {', '.join(DATASETS)} (default: %(default)s)")
    profile.add_argument("--threat-model", default="Linf", choices=threat_model_choices, metavar="THREAT_MODEL",
                         help="RobustBench threat model, one of %(choices)s; selects the attack norm "
                              "and RobustBench's eps (default: %(default)s)")
    profile.add_argument("--eps", type=_positive_float, default=None,
                         help="attack radius, e.g. 8/255 or 0.5 (default: RobustBench's eps for the threat model)")
    profile.add_argument("--data-dir", default=None,
                         help="images: class sub-folders named by class (CIFAR names, ImageNet wnids) or number, or "
                              "RobustBench's dataset folder (default: the 20 embedded sample images)")
    profile.add_argument("--classes", default=None, metavar="FILE",
                         help="class-folder mapping for --data-dir: JSON {folder: label} or a list of names "
                              "(label = position), or one name a line")
    profile.add_argument("--n-examples", type=_positive_int, default=None,
                         help="number of images (default: all sample images, 100 from --data-dir)")
    profile.add_argument("--preset", choices=("fast", "default", "gpu"), default="default",
                         help="budgets: fast (CI, ~1 min on 2 cores), default (a few minutes), gpu")
    profile.add_argument("--device", default=None,
                         help="e.g. cpu, cuda; under torchrun cuda means this process's GPU, cuda:$LOCAL_RANK "
                              "(default: where the model is)")
    profile.add_argument("--out", default="freqplug-report", help="output folder (default: %(default)s/)")
    profile.add_argument("--force", action="store_true", help="recompute stages cached in --out")
    profile.add_argument("--quiet", action="store_true", help="no progress bars")
    profile.add_argument("--skip", action="append", choices=stage_choices, metavar="STAGE",
                         help="leave out a stage (repeatable): %(choices)s")
    profile.add_argument("--only", action="append", choices=stage_choices, metavar="STAGE",
                         help="run only these stages (repeatable)")
    profile.add_argument("--shard-size", type=_positive_int, default=None, metavar="N",
                         help="images per unit of work split across torchrun processes and seeded on its own "
                              "(default: the preset's, fast 1, default 16, gpu 128); the numbers depend on it, not "
                              "on the number of processes")
    profile.add_argument("--seed", type=_seed, default=0,
                         help="seed of attacks and Shapley sampling, a non-negative integer (default: 0)")
    profile.add_argument("--estimate", action="store_true",
                         help="print the model evaluations each stage would spend (per model, per rank under "
                              "torchrun) for these options and exit, without loading or computing anything")
    profile.set_defaults(handler=_profile)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="freqplug", description="Frequency robustness tools for image classifiers.")
    parser.add_argument("--version", action="version", version=f"freqplug {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    smoke = commands.add_parser(
        "smoke", help="run the spectral core on the embedded CIFAR-10 ResNet-18 and its 20 sample images")
    smoke.add_argument("--radii", type=_positive_float, nargs="+", default=[16, 12, 10, 8, 6, 4],
                       help="low/high split radii in bins (default: %(default)s)")
    smoke.set_defaults(handler=_smoke)
    _add_profile(commands)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    return args.handler(args)
