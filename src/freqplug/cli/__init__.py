"""Command line: ``freqplug <command>`` (also ``python -m freqplug <command>``)."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import List, Optional

from .._version import __version__

DATASETS = ("cifar10", "cifar100", "imagenet", "mnist", "fashion_mnist")
_STAGES = ("clean_accuracy", "autoattack", "perturbation_spectrum", "masked_noise", "band_shapley",
           "frequency_shapley", "frequency_bias", "hf_attack", "occluded_frequency")  # = freqplug.report.STAGES


class UsageError(Exception):
    """A bad argument: reported as one line on stderr, exit status 2, no traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        print(f"{self.prog}: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


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


def _load_one_model(spec: str, args):
    """'embedded', a file (TorchScript or a pickled nn.Module), 'module:callable', or a RobustBench name."""
    import importlib

    import torch

    if spec == "embedded":
        if args.dataset != "cifar10":
            raise UsageError(f"the embedded model is a CIFAR-10 classifier; use --dataset cifar10 (got {args.dataset!r}) "
                             "or pass another --model")
        from ..models import cifar10_resnet18

        return "embedded", cifar10_resnet18()
    path = Path(spec)
    if path.is_file():
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception:  # not TorchScript: a pickled module
            try:
                model = torch.load(str(path), map_location="cpu", weights_only=False)
            except Exception as error:
                raise UsageError(f"cannot load model file {spec!r}: {_one_line(error)}") from None
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"model file {spec!r} holds a {type(model).__name__}, not a torch.nn.Module; a state_dict "
                             "needs its architecture: pass --model my_module:build_model (a callable returning the "
                             "model with its weights loaded)")
        return path.stem, model.eval()
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise UsageError(f"cannot import --model {spec!r} ({_one_line(error)}); expected module:callable, with "
                             "the module importable from the current directory or PYTHONPATH") from None
        model = factory() if callable(factory) and not isinstance(factory, torch.nn.Module) else factory
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"--model {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
        return spec, model.eval()
    from ..eval import CheckpointNotFoundError, load_model, model_names

    try:
        known = model_names(args.dataset, args.threat_model)
    except ValueError as error:
        raise UsageError(_one_line(error)) from None
    if spec not in known:
        import difflib

        close = difflib.get_close_matches(spec, known, n=3)
        raise UsageError(f"unknown model {spec!r}: not 'embedded', an existing file, module:callable, or a RobustBench "
                         f"model for --dataset {args.dataset} --threat-model {args.threat_model}"
                         + (f" (did you mean {', '.join(close)}?)" if close else ""))
    try:
        return spec, load_model(spec, model_dir=args.model_dir, dataset=args.dataset, threat_model=args.threat_model)
    except CheckpointNotFoundError as error:
        first = str(error).splitlines()
        raise UsageError(" ".join(first[:2]) + " (see freqplug.eval.load_model)") from None


def _image_folder(folder: Path, n: int, size: int):
    """Images of class sub-folders (``folder/<class>/*.png``), labels = sorted class index (or the
    folder name when every name is an integer), resized to ``size`` x ``size``."""
    import torch
    from PIL import Image

    classes = sorted(p for p in folder.iterdir() if p.is_dir())
    numeric = all(p.name.isdigit() for p in classes)
    items = []
    for index, class_dir in enumerate(classes):
        label = int(class_dir.name) if numeric else index
        items += [(f, label) for f in sorted(class_dir.iterdir())
                  if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp")]
    if not items:
        return None
    items = items[:n]
    images = []
    for file, _ in items:
        picture = Image.open(file).convert("RGB").resize((size, size))
        images.append(torch.tensor(list(picture.getdata()), dtype=torch.float32).view(size, size, 3).permute(2, 0, 1) / 255)
    return torch.stack(images), torch.tensor([label for _, label in items])


def _load_data(args):
    if args.n_examples is not None and args.n_examples < 1:
        raise UsageError(f"--n-examples must be a positive integer, got {args.n_examples}")
    n = args.n_examples
    if args.data_dir is None:
        from ..data import sample_images

        x, y = sample_images(args.dataset)
        if n is not None and n > x.shape[0]:
            print(f"freqplug profile: note: the embedded {args.dataset} sample has {x.shape[0]} images; "
                  f"pass --data-dir for more", file=sys.stderr)
        return x[:n], y[:n]
    folder = Path(args.data_dir)
    if not folder.is_dir():
        raise UsageError(f"--data-dir {str(folder)!r} is not a folder")
    n = 100 if n is None else n
    size = {"imagenet": 224, "mnist": 28, "fashion_mnist": 28}.get(args.dataset, 32)
    found = _image_folder(folder, n, size)
    if found is not None:
        return found
    if args.dataset not in ("cifar10", "cifar100", "imagenet"):
        raise UsageError(f"--data-dir {str(folder)!r} has no class sub-folders of images, and RobustBench has no "
                         f"loader for {args.dataset!r}")
    from ..compat import install_autoattack

    install_autoattack()
    from robustbench.data import load_clean_dataset
    from robustbench.model_zoo.enums import BenchmarkDataset

    try:
        return load_clean_dataset(BenchmarkDataset(args.dataset), n, str(folder))
    except Exception as error:  # missing files surface as download errors offline
        raise UsageError(f"cannot load {args.dataset} from --data-dir {str(folder)!r} with RobustBench's loader "
                         f"({type(error).__name__}: {_one_line(error)[:200]}); put the dataset files there "
                         "or use a folder of class sub-folders with images") from None


def _profile(args: argparse.Namespace) -> int:
    import torch

    from .. import _distributed as distributed

    started = distributed.init_from_env()
    try:
        try:
            if args.dataset not in DATASETS:
                raise UsageError(f"unknown --dataset {args.dataset!r}; choose one of {', '.join(DATASETS)}")
            out = Path(args.out)
            if distributed.is_writer():
                _check_writable(out)
            if args.device is not None:
                try:
                    device = torch.device(args.device)
                    torch.empty(0, device=device)
                except (RuntimeError, AssertionError) as error:
                    raise UsageError(f"--device {args.device!r} is not usable here ({_one_line(error)}); "
                                     "try --device cpu") from None
            models = {}
            with warnings.catch_warnings():
                # robustbench/timm/torch.jit print import-time deprecation notices; they are not the user's
                # business and would break the one-line error contract.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                warnings.filterwarnings("ignore", message=".*pkg_resources.*")
                for spec in args.model or ["embedded"]:
                    name, model = _load_one_model(spec, args)
                    if name in models:
                        raise UsageError(f"--model {spec!r} is given twice")
                    models[name] = model.to(args.device) if args.device else model
                x, y = _load_data(args)
        except UsageError as error:
            print(f"freqplug profile: error: {error}", file=sys.stderr)
            return 2
        from ..report import profile

        try:
            result = profile(models, x, y, out=out, preset=args.preset,
                             stages=args.only, skip=args.skip or (), device=args.device, force=args.force,
                             quiet=args.quiet, seed=args.seed)
        except KeyboardInterrupt:
            print(f"freqplug profile: interrupted; finished stages are cached in {out / 'cache'}, rerun to resume",
                  file=sys.stderr)
            return 130
        if distributed.is_writer() and not args.quiet:
            cached = sum(len(v) for v in result.cached.values())
            print(f"report: {out / 'report.html'} ({out / 'report.md'}, {out / 'metrics.json'})"
                  + (f"; {cached} stage(s) reused from the cache" if cached else ""))
        return 0
    finally:
        if started:
            torch.distributed.destroy_process_group()


def _add_profile(commands) -> None:
    profile = commands.add_parser(
        "profile", help="profile a model's frequency robustness and write a report with plots",
        description="Measure clean and AutoAttack accuracy, masked-noise errors, band and frequency Shapley values, "
                    "B_low of input Jacobians, the HF attack and occluded-frequency scores; write report.md, "
                    "report.html, metrics.json and PNG plots into --out.")
    profile.add_argument("--model", action="append", metavar="MODEL",
                         help="'embedded' (default: the CIFAR-10 ResNet-18), a RobustBench model name, a TorchScript "
                              "or pickled-module file, or module:callable; repeat to compare models")
    profile.add_argument("--model-dir", default="./models", help="RobustBench checkpoint folder (default: %(default)s)")
    profile.add_argument("--dataset", default="cifar10", help=f"one of {', '.join(DATASETS)} (default: %(default)s)")
    profile.add_argument("--threat-model", default="Linf", help="RobustBench threat model (default: %(default)s)")
    profile.add_argument("--data-dir", default=None,
                         help="images: class sub-folders of images, or RobustBench's dataset folder "
                              "(default: the 20 embedded sample images)")
    profile.add_argument("--n-examples", type=int, default=None, help="number of images (default: all sample images, "
                                                                      "100 from --data-dir)")
    profile.add_argument("--preset", choices=("fast", "default", "gpu"), default="default",
                         help="budgets: fast (CI, ~1 min on 2 cores), default (a few minutes), gpu")
    profile.add_argument("--device", default=None, help="e.g. cpu, cuda (default: where the model is)")
    profile.add_argument("--out", default="freqplug-report", help="output folder (default: %(default)s/)")
    profile.add_argument("--force", action="store_true", help="recompute stages cached in --out")
    profile.add_argument("--quiet", action="store_true", help="no progress bars")
    profile.add_argument("--skip", action="append", choices=_STAGES, metavar="STAGE",
                         help=f"leave out a stage (repeatable): {', '.join(_STAGES)}")
    profile.add_argument("--only", action="append", choices=_STAGES, metavar="STAGE",
                         help="run only these stages (repeatable)")
    profile.add_argument("--seed", type=int, default=0, help="seed of attacks and Shapley sampling (default: 0)")
    profile.set_defaults(handler=_profile)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="freqplug", description="Frequency robustness tools for image classifiers.")
    parser.add_argument("--version", action="version", version=f"freqplug {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    smoke = commands.add_parser(
        "smoke", help="run the spectral core on the embedded CIFAR-10 ResNet-18 and its 20 sample images")
    smoke.add_argument("--radii", type=float, nargs="+", default=[16, 12, 10, 8, 6, 4],
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
