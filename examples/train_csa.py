"""PGD-AT and TRADES with and without CSA (Chen2022 §5) on real handwritten digits, CPU minutes.

1. Train a standard CNN (the "pretrained model" f^ whose Shapley values define the NFCs).
2. Build a CSA bank from the first few training images of every class with FrequencyShapley
   (softmax probability of the true class; an 8x8 patch grid on the 16x16 images, i.e. the same
   2x2-bin patches as the authors' 16x16 grid on 32x32 CIFAR images).
3. Train PGD-AT, PGD-AT + CSA, TRADES, TRADES + CSA from the same initialization and print
   clean and PGD-20 accuracy on held-out digits.

The two ways the authors plug CSA in:
* PGD-AT: the attack runs on the augmented image (the eps-ball is around aug(x)).
* TRADES: the augmented image only moves the PGD starting point; the projection and the
  natural term stay around the clean x.

    .venv/bin/python examples/train_csa.py [--epochs 6] [--per-class 5]
"""

import argparse
import time

import torch
import torch.nn.functional as F
import torchattacks
from _common import digits, small_cnn

from freqplug.training import CSABank, CSAugment


def pgd(model, x, y, eps, alpha, steps, start, loss_fn):
    """L-inf PGD maximizing loss_fn(model(x_adv)), projected around ``x``, from ``start``."""
    x_adv = torch.clamp(torch.min(torch.max(start, x - eps), x + eps), 0, 1).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(model(x_adv)), x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0, 1)
    return x_adv.detach()


def train(train_set, epochs, method, augment, eps, seed=0, beta=6.0):
    x, y = train_set
    model = small_cnn(seed).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    alpha, steps = eps / 4, 5
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 64):
            b = order[start:start + 64]
            xb, yb = x[b], y[b]
            if method == "PGD-AT":
                # CSA: attack the augmented image (eps-ball around it), train on that adversarial example
                x0 = augment(xb, yb, epoch=epoch) if augment is not None else xb
                noise = (2 * torch.rand(x0.shape, generator=generator) - 1) * eps
                x_adv = pgd(model, x0, yb, eps, alpha, steps, x0 + noise, lambda out: F.cross_entropy(out, yb))
                loss = F.cross_entropy(model(x_adv), yb)
            else:  # TRADES
                with torch.no_grad():
                    clean_prob = F.softmax(model(xb), dim=1)
                # CSA: only the PGD starting point moves; projection stays around the clean xb
                origin = augment(xb, yb, epoch=epoch) if augment is not None else xb
                start_point = origin + 0.001 * torch.randn(xb.shape, generator=generator)
                kl = lambda out: F.kl_div(F.log_softmax(out, dim=1), clean_prob, reduction="sum")  # noqa: E731
                x_adv = pgd(model, xb, yb, eps, alpha, steps, start_point, kl)
                logits = model(xb)
                loss = F.cross_entropy(logits, yb) + beta * F.kl_div(
                    F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def train_standard(train_set, epochs=4, seed=1):
    x, y = train_set
    model = small_cnn(seed).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 64):
            b = order[start:start + 64]
            loss = F.cross_entropy(model(x[b]), y[b])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def evaluate(model, test_set, eps):
    x, y = test_set
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    torch.manual_seed(0)
    x_adv = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=True)(x, y)
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    return clean, robust


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=5)
    parser.add_argument("--epsilon", type=float, default=16 / 255)
    parser.add_argument("--n-samples", type=int, default=None,
                        help="fixed FrequencyShapley permutations per image (default: CSABank's adaptive rounds)")
    args = parser.parse_args()
    train_set, test_set = digits()

    start = time.perf_counter()
    pretrained = train_standard(train_set)
    bank = CSABank.build(pretrained, *train_set, per_class=args.per_class, players=8, n_samples=args.n_samples,
                         estimator="antithetic", seed=0, batch_size=20, model_name="digits small CNN (standard)")
    print(f"bank: {bank} built in {time.perf_counter() - start:.0f} s; "
          f"NFC image L-inf norm: median {bank.nfc_images.flatten(1).abs().amax(1).median():.3f}; "
          f"{bank.settings['mean_samples']:.0f} permutations per image on average, "
          f"{bank.settings['undetermined_fraction']:.0%} of the players with undetermined sign")

    ramp = max(1, round(0.77 * args.epochs))  # the authors ramp over 77 of 100 epochs
    rows = []
    for method in ("PGD-AT", "TRADES"):
        for use_csa in (False, True):
            start = time.perf_counter()
            augment = CSAugment(bank, alpha=0.5, ramp_epochs=ramp, seed=0) if use_csa else None
            model = train(train_set, args.epochs, method, augment, args.epsilon)
            clean, robust = evaluate(model, test_set, args.epsilon)
            name = f"{method} + CSA" if use_csa else method
            rows.append((name, clean, robust, time.perf_counter() - start))
            print(f"  trained {name} ({rows[-1][3]:.0f} s)", flush=True)
    budget = args.n_samples or "adaptive"
    print(f"\nsklearn digits 16x16, {args.epochs} epochs, eps={args.epsilon * 255:.0f}/255, bank {len(bank)} NFC "
          f"images ({args.per_class}/class, FrequencyShapley 8x8 patch grid, antithetic n_samples={budget}),"
          f" held-out n={len(test_set[1])}")
    print(f"{'model':<18}{'clean':>10}{'PGD-20':>10}{'train s':>10}")
    for name, clean, robust, seconds in rows:
        print(f"{name:<18}{100 * clean:>9.1f}%{100 * robust:>9.1f}%{seconds:>10.0f}")


if __name__ == "__main__":
    main()
