"""What profiling the RobustBench CIFAR-10 Linf leaderboard costs: per architecture and in GPU-hours, on paper.

1. Every model of robustbench's CIFAR-10 Linf model zoo is built on the ``meta`` device (random-weight
   architecture, nothing downloaded, no memory) and grouped by architecture (class and parameter count; the
   WideResNets are told apart by their size: WRN-28-10 36.5 M, WRN-34-10 46.2 M, WRN-70-16 266.8 M, ...).
   Forward FLOPs per 32x32 image are counted with ``torch.utils.flop_counter`` on the meta model.
2. One model per architecture is built on CPU and one forward + backward of a batch (default 32) is timed
   (``--max-gflops`` skips timing the largest ones: their CPU time is extrapolated from the FLOP rate measured on
   the others, and marked ``~``).
3. Model evaluations per model come from :func:`freqplug.report.estimate_cost` (``gpu`` preset, 10,000 images,
   3x32x32, 10 classes): an upper bound (AutoAttack and the HF attack stop on broken points). Every evaluation is
   costed as a forward + backward (attack steps are; Shapley/occlusion rows are forwards only, so this is
   conservative by up to 3x for those stages).
4. GPU time = evaluations x 3 x forward FLOPs / (``--gpu-tflops`` x ``--utilization``). Default: NVIDIA A100 FP32
   peak 19.5 TFLOP/s (NVIDIA A100 datasheet; TF32 tensor cores, on by default for cuDNN convolutions in PyTorch,
   peak 156) at 50 % utilisation. These are assumptions, printed with the result, not measurements: no GPU
   was available. The implied speed-up over this machine's CPU is printed per architecture.

    OMP_NUM_THREADS=2 PYTHONPATH=src python bench/forward_cost.py [--batch 32] [--threads 2] [--max-gflops 15]
        [--gpu-tflops 19.5] [--utilization 0.5] [--images 10000]

Models whose architecture cannot be built here (a missing timm model, CUDA-only code) are listed and costed at the
mean GPU time per model of the others.
"""

from __future__ import annotations

import argparse
import collections
import time
import warnings


def _zoo():
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]


def _forward_flops(model, batch: int = 1) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        model(torch.empty(batch, 3, 32, 32))
    return counter.get_total_flops() // batch


def _cpu_model(factory):
    import torch

    torch.manual_seed(0)
    return factory().eval()


def _cpu_forward_flops(model) -> int:
    """Forward FLOPs of one image, counted on the CPU model (for architectures the meta device cannot run)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, 32, 32))
    return counter.get_total_flops()


def _time_forward_backward(model, batch: int) -> float:
    """CPU seconds per image of one forward + backward (input gradient, as an attack step) of a batch."""
    import torch

    for p in model.parameters():
        p.requires_grad_(False)  # attacks need the input gradient only
    warm = torch.rand(2, 3, 32, 32, requires_grad=True)
    model(warm).sum().backward()
    x = torch.rand(batch, 3, 32, 32, requires_grad=True)
    started = time.perf_counter()
    model(x).sum().backward()
    return (time.perf_counter() - started) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-gflops", type=float, default=15.0,
                        help="time only architectures up to this many forward GFLOPs per image (default: %(default)s, "
                             "up to WRN-34-10; the others are extrapolated from the measured FLOP rate)")
    parser.add_argument("--gpu-tflops", type=float, default=19.5, help="GPU peak TFLOP/s (default: A100 FP32)")
    parser.add_argument("--utilization", type=float, default=0.5, help="fraction of the peak reached")
    parser.add_argument("--images", type=int, default=10_000, help="test images per model (default: CIFAR-10's)")
    args = parser.parse_args()

    import torch

    from freqplug.report import estimate_cost

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    estimate = estimate_cost("gpu", n_images=args.images, image_shape=(3, 32, 32), num_classes=10)
    evaluations = estimate.total
    zoo = _zoo()
    groups = collections.OrderedDict()  # (class, params) -> {"models": [...], "factory", "flops"}
    unbuilt = []
    for name, entry in zoo.items():
        try:
            with torch.device("meta"):
                model = entry["model"]()
            key = (type(model).__name__, sum(p.numel() for p in model.parameters()))
        except Exception as error:  # noqa: BLE001 - any failure: the model is reported as not built
            unbuilt.append(f"{name} ({type(error).__name__}: {str(error).splitlines()[0][:60]})")
            continue
        if key not in groups:
            try:
                flops = _forward_flops(model)
            except Exception:  # noqa: BLE001 - an architecture the meta device cannot trace
                flops = None
            groups[key] = {"models": [], "factory": entry["model"], "flops": flops}
        groups[key]["models"].append(name)

    print(f"RobustBench CIFAR-10 Linf: {len(zoo)} models, {len(groups)} architectures built, {len(unbuilt)} not "
          f"built here")
    print(f"evaluations per model, freqplug profile --preset gpu on {args.images:,} images: <= {evaluations:,} "
          f"(freqplug.report.estimate_cost; AutoAttack standard <= {estimate.rows['autoattack']['evaluations']:,})")
    print(f"CPU: {args.threads} torch thread(s), forward + backward of a batch of {args.batch}; GPU: "
          f"{args.gpu_tflops:g} TFLOP/s peak x {args.utilization:.0%} utilisation (assumed), 3 x forward FLOPs per "
          "evaluation")
    measured = {}
    for key, group in groups.items():
        if group["flops"] is not None and group["flops"] / 1e9 > args.max_gflops:
            continue
        try:
            model = _cpu_model(group["factory"])
            if group["flops"] is None:
                group["flops"] = _cpu_forward_flops(model)
                if group["flops"] / 1e9 > args.max_gflops:
                    continue
            measured[key] = _time_forward_backward(model, args.batch)
            del model
        except Exception as error:  # noqa: BLE001
            print(f"  {key[0]} ({key[1] / 1e6:.1f} M): timing failed: {type(error).__name__}: {error}")
    rates = [3 * groups[k]["flops"] / s for k, s in measured.items() if groups[k]["flops"]]
    cpu_rate = sum(rates) / len(rates) if rates else None  # FLOP/s this CPU reaches on these networks

    header = (f"{'architecture':<28}{'params M':>9}{'GFLOPs':>8}{'models':>7}{'CPU ms/img':>11}{'CPU h/model':>12}"
              f"{'GPU h/model':>12}{'GPU/CPU':>8}  example")
    print(header + "\n" + "-" * len(header))
    gpu_flops = args.gpu_tflops * 1e12 * args.utilization
    total_gpu = total_cpu = 0.0
    counted_models = 0
    for key, group in groups.items():
        flops = group["flops"]
        seconds = measured.get(key)
        mark = ""
        if seconds is None and flops and cpu_rate:
            seconds, mark = 3 * flops / cpu_rate, "~"
        gpu_seconds = 3 * flops / gpu_flops if flops else None
        cpu_h = None if seconds is None else evaluations * seconds / 3600
        gpu_h = None if gpu_seconds is None else evaluations * gpu_seconds / 3600
        n = len(group["models"])
        if gpu_h is not None:
            total_gpu += n * gpu_h
            counted_models += n
        if cpu_h is not None:
            total_cpu += n * cpu_h
        print(f"{key[0][:27]:<28}{key[1] / 1e6:>9.1f}{'-' if flops is None else f'{flops / 1e9:.2f}':>8}{n:>7}"
              f"{'-' if seconds is None else mark + f'{seconds * 1e3:.1f}':>11}"
              f"{'-' if cpu_h is None else f'{cpu_h:,.0f}':>12}{'-' if gpu_h is None else f'{gpu_h:,.1f}':>12}"
              f"{'-' if not (seconds and gpu_seconds) else f'{seconds / gpu_seconds:.0f}x':>8}  {group['models'][0]}")
    mean_gpu = total_gpu / counted_models if counted_models else 0.0
    rest = len(zoo) - counted_models
    print(f"not built here ({len(unbuilt)}): " + "; ".join(unbuilt))
    print(f"whole leaderboard ({len(zoo)} models): <= {total_gpu + rest * mean_gpu:,.0f} GPU-hours "
          f"({counted_models} costed from their FLOPs, {rest} at the mean {mean_gpu:,.1f} GPU-h per model); "
          f"this machine's CPU: <= {total_cpu:,.0f} CPU-hours for the {counted_models} models with a time")
    print("assumptions: every evaluation a forward + backward; the AutoAttack bound attacks every point with every "
          "attack (a real run attacks only the points still robust, typically a half or less after APGD-CE); "
          "GPU throughput from peak FLOP/s x utilisation, not measured")


if __name__ == "__main__":
    main()
