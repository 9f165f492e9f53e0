"""JaFR drop-in loss (Chan2022 §3.2): values by hand, gradients, FGSM reuse, hygiene, real-data direction."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import NaNModel, assert_model_unchanged, snapshot_model

from freqplug.spectral import frequency_bias
from freqplug.training import JaFRLoss


def tiny_cnn(channels=1, classes=10, activation=nn.ReLU, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), activation(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), activation(), nn.Flatten(), nn.Linear(8 * 4 * 4, classes),
    )


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (6,), generator=g)
    return x, y


def by_hand(model, x, y, lam):
    leaf = x.clone().requires_grad_(True)
    logits = model(leaf)
    ce = F.cross_entropy(logits, y)
    (jac,) = torch.autograd.grad(ce, leaf, create_graph=True)
    bias = frequency_bias(jac)
    return ce + lam * (-bias), ce, bias, logits, jac


@pytest.mark.parametrize("lam", [0.001, 0.5, -0.2])
def test_loss_equals_ce_minus_lambda_blow_by_hand(batch, lam):
    x, y = batch
    model = tiny_cnn()
    out = JaFRLoss(lambda_freq=lam)(model, x, y, return_input_gradient=True)
    total, ce, bias, logits, jac = by_hand(model, x, y, lam)
    torch.testing.assert_close(out.loss, total)
    torch.testing.assert_close(out.base_loss, ce.detach())
    torch.testing.assert_close(out.frequency_bias, bias.detach())
    torch.testing.assert_close(out.penalty, -lam * bias)
    torch.testing.assert_close(out.logits, logits.detach())
    torch.testing.assert_close(out.input_gradient, jac.detach())
    assert out.loss.requires_grad and not out.base_loss.requires_grad and not out.logits.requires_grad
    # the penalty really reaches the parameters: gradients equal the hand-written double backprop
    model.zero_grad()
    out.loss.backward()
    ours = [p.grad.clone() for p in model.parameters()]
    hand = torch.autograd.grad(total, list(model.parameters()))
    for a, b in zip(ours, hand):
        torch.testing.assert_close(a, b)


def test_custom_base_loss_is_the_differentiated_loss(batch):
    x, y = batch
    model = tiny_cnn()

    def smoothed(logits, target):
        return F.cross_entropy(logits, target, label_smoothing=0.1)

    out = JaFRLoss(0.01, base_loss=smoothed)(model, x, y)
    leaf = x.clone().requires_grad_(True)
    loss = smoothed(model(leaf), y)
    (jac,) = torch.autograd.grad(loss, leaf, create_graph=True)
    torch.testing.assert_close(out.loss, loss - 0.01 * frequency_bias(jac))


def test_parameter_gradient_matches_finite_differences_float64():
    # smooth activations so second derivatives are informative; float64 for gradcheck
    model = tiny_cnn(activation=nn.Tanh).double()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([1, 4, 7])
    jafr = JaFRLoss(lambda_freq=0.3)
    params = dict(model.named_parameters())
    names = ["0.bias", "6.bias"]  # first conv (inside the Jacobian, tanh makes it matter) and last layer

    def loss_of(*tensors):
        overrides = {**params, **dict(zip(names, tensors))}

        def functional_model(inp):
            return torch.func.functional_call(model, overrides, (inp,))

        return jafr(functional_model, x, y).loss

    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(loss_of, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_fgsm_step_reuses_one_gradient_and_equals_two_pass_path(batch):
    x, y = batch
    model = tiny_cnn()
    lam, eps = 0.05, 8 / 255
    jafr = JaFRLoss(lam)
    out = jafr.fgsm_step(model, x, y, epsilon=eps, random_start=True, generator=torch.Generator().manual_seed(5))

    # two-pass reference: the same random start, JaFR at the start point, FGSM from a second gradient
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(5))
    start = torch.clamp(x + (2 * noise - 1) * eps, 0, 1)
    penalty = JaFRLoss(lam)(model, start, y).penalty
    leaf = start.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(leaf), y), leaf)
    delta = torch.clamp(start - x + 1.25 * eps * grad.sign(), -eps, eps)
    x_adv = torch.clamp(x + delta, 0, 1)
    reference = F.cross_entropy(model(x_adv), y) + penalty

    torch.testing.assert_close(out.adversarial_inputs, x_adv)
    torch.testing.assert_close(out.loss, reference)
    torch.testing.assert_close(out.input_gradient, grad)
    ours = torch.autograd.grad(out.loss, list(model.parameters()))
    theirs = torch.autograd.grad(reference, list(model.parameters()))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    assert float((out.adversarial_inputs - x).abs().max()) <= eps + 1e-6


def test_fgsm_without_random_start_has_the_clean_jacobian(batch):
    x, y = batch
    model = tiny_cnn()
    jafr = JaFRLoss(0.01)
    fgsm = jafr.fgsm_step(model, x, y, random_start=False)
    clean = jafr(model, x, y, return_input_gradient=True)
    torch.testing.assert_close(fgsm.frequency_bias, clean.frequency_bias)
    torch.testing.assert_close(fgsm.input_gradient, clean.input_gradient)
    # hand-composed variant from the documented return_input_gradient path gives the same loss
    x_adv = torch.clamp(x + torch.clamp(1.25 * 8 / 255 * clean.input_gradient.sign(), -8 / 255, 8 / 255), 0, 1)
    torch.testing.assert_close(fgsm.loss, F.cross_entropy(model(x_adv), y) + clean.penalty)


def test_sub_batch_and_every_cut_cost_as_documented(batch):
    x, y = batch
    model = tiny_cnn()
    out = JaFRLoss(0.1, sub_batch=2)(model, x, y)
    leaf = x[:2].clone().requires_grad_(True)
    (jac,) = torch.autograd.grad(F.cross_entropy(model(leaf), y[:2]) * 2 / 6, leaf, create_graph=True)
    torch.testing.assert_close(out.frequency_bias, frequency_bias(jac).detach())
    torch.testing.assert_close(out.base_loss, F.cross_entropy(model(x), y).detach())

    # FGSM + JaFR on a sub-batch: the penalty of the first k start points, the FGSM loss of the full batch
    fgsm_sub = JaFRLoss(0.1, sub_batch=2).fgsm_step(model, x, y, random_start=False)
    torch.testing.assert_close(fgsm_sub.penalty, JaFRLoss(0.1, sub_batch=2)(model, x, y).penalty)
    torch.testing.assert_close(fgsm_sub.base_loss, F.cross_entropy(model(fgsm_sub.adversarial_inputs), y).detach())

    jafr = JaFRLoss(0.1, every=3)
    results = [jafr(model, x, y) for _ in range(4)]
    assert [r.frequency_bias is not None for r in results] == [True, False, False, True]
    torch.testing.assert_close(results[1].loss, results[1].base_loss)
    assert jafr.step == 4
    jafr.reset()
    assert jafr.step == 0


@pytest.mark.parametrize("train_mode", [True, False])
def test_user_tensors_and_model_mode_untouched(batch, train_mode):
    x, y = batch
    model = tiny_cnn().train(train_mode)
    x_before, y_before = x.clone(), y.clone()
    jafr = JaFRLoss()
    out = jafr(model, x, y)
    out.loss.backward()
    out2 = jafr.fgsm_step(model, x, y)
    out2.loss.backward()
    assert model.training is train_mode
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert x.grad is None and x.grad_fn is None and not x.requires_grad
    # an input that requires grad (e.g. from a differentiable augmentation) gets nothing either
    x_user = x.clone().requires_grad_(True)
    jafr(model, x_user, y).loss.backward()
    assert x_user.grad is None
    assert all(p.requires_grad for p in model.parameters())


def test_works_inside_no_grad_and_under_cpu_autocast(batch):
    x, y = batch
    model = tiny_cnn()
    with torch.no_grad():
        out = JaFRLoss(0.01)(model, x, y)
    assert out.loss.requires_grad  # the Jacobian needs a graph; the hook enables it locally
    reference = JaFRLoss(0.01)(model, x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = JaFRLoss(0.01)(model, x, y)
        amp_fgsm = JaFRLoss(0.01).fgsm_step(model, x, y, generator=torch.Generator().manual_seed(0))
    amp.loss.backward()
    amp_fgsm.loss.backward()
    assert amp.loss.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(amp.base_loss, reference.base_loss, atol=0.05, rtol=0.05)
    torch.testing.assert_close(amp.frequency_bias, reference.frequency_bias, atol=0.3, rtol=0.1)


def test_bad_inputs_raise_clear_errors(batch):
    x, y = batch
    model = tiny_cnn()
    jafr = JaFRLoss()
    with pytest.raises(TypeError, match="`x` must be a torch.Tensor"):
        jafr(model, x.numpy(), y)
    with pytest.raises(ValueError, match="`x` must have 4 dimensions"):
        jafr(model, x[0], y)
    with pytest.raises(TypeError, match="`x` must be a floating-point tensor"):
        jafr(model, (x * 255).long(), y)
    with pytest.raises(ValueError, match="`y` has batch size 3"):
        jafr(model, x, y[:3])
    with pytest.raises(TypeError, match="model"):
        jafr("not a model", x, y)
    with pytest.raises(ValueError, match="base_loss"):
        JaFRLoss(base_loss=lambda a, b: F.cross_entropy(a, b, reduction="none"))(model, x, y)
    with pytest.raises(ValueError, match="sub_batch"):
        JaFRLoss(sub_batch=0)
    with pytest.raises(ValueError, match="every"):
        JaFRLoss(every=0)
    with pytest.raises(ValueError, match="lambda_freq"):
        JaFRLoss(lambda_freq=float("nan"))
    with pytest.raises(TypeError, match="base_loss"):
        JaFRLoss(base_loss="cross_entropy")
    with pytest.raises(ValueError, match="epsilon"):
        jafr.fgsm_step(model, x, y, epsilon=-1.0)


def test_images_outside_unit_range_and_non_finite_pixels_are_refused(batch):
    """x * 255 would make fgsm_step clamp to near-white images; a NaN pixel would give a NaN loss."""
    x, y = batch
    model = tiny_cnn()
    jafr = JaFRLoss()
    with pytest.raises(ValueError, match=r"`x` must hold images in \[0, 1\].*got values in \[2.59.*, 254.8\]"):
        jafr.fgsm_step(model, x * 255, y)
    with pytest.raises(ValueError, match=r"`x` must hold images in \[0, 1\]"):
        jafr(model, x * 255, y)
    nan_pixel = x.clone()
    nan_pixel[2, 0, 3, 3] = float("nan")
    for call in (jafr, jafr.fgsm_step):
        with pytest.raises(ValueError, match="`x` contains 1 NaN"):
            call(model, nan_pixel, y)
    assert jafr.step == 0  # a refused call does not advance the `every` counter


def test_labels_outside_the_model_classes_are_refused_without_an_extra_forward(batch):
    x, y = batch
    calls = []
    model = tiny_cnn(classes=4)
    model.register_forward_hook(lambda module, args, out: calls.append(out.shape[0]))
    jafr = JaFRLoss()
    bad = y.clone() % 4
    bad[1] = 4  # one label past the 4 outputs
    for call in (jafr, jafr.fgsm_step):
        with pytest.raises(ValueError, match=r"`y` must hold class indices in \[0, 4\), got values in \[0, 4\]"):
            call(model, x, bad)
    with pytest.raises(ValueError, match=r"`y` must hold class indices in \[0, 4\)"):
        jafr(model, x, bad - 5)  # negative labels too
    assert calls == [6, 6, 6]  # the check reads the loss's own logits: one forward per refused call
    calls.clear()
    jafr(model, x, bad % 4)
    assert calls == [6]
    # soft targets are base_loss's business: accepted as cross-entropy accepts them
    soft = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    assert torch.isfinite(jafr(model, x, soft).loss)


def test_non_finite_model_outputs_and_losses_are_refused(batch):
    x, y = batch
    model = tiny_cnn()
    jafr = JaFRLoss()
    for value in (float("nan"), float("inf")):
        for call in (jafr, jafr.fgsm_step):
            with pytest.raises(ValueError, match=r"`model` \(NaNModel\) returned 60 NaN or infinite"):
                call(NaNModel(model, value), x, y)
    with pytest.raises(ValueError, match="`base_loss` returned a non-finite loss"):
        JaFRLoss(base_loss=lambda logits, target: F.cross_entropy(logits, target) / 0.0)(model, x, y)


@pytest.mark.parametrize("train_mode", [True, False])
def test_model_state_is_restored_even_when_a_call_is_refused(batch, train_mode):
    x, y = batch
    model = tiny_cnn().train(train_mode)
    model[0].train(not train_mode)  # a per-module mode that model.train(flag) would lose
    model[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    snapshot = snapshot_model(model)
    jafr = JaFRLoss(0.01)
    jafr(model, x, y)
    jafr.fgsm_step(model, x, y, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError):
        jafr(model, x, y + 10)
    assert_model_unchanged(model, snapshot)


def _digits(size=16):
    from freqplug.data import digits

    return digits(size)


def test_jafr_raises_low_frequency_bias_on_real_digits():
    """Chan2022 Table 2 direction (B_low 1.56 -> 16.71 on CIFAR-10) on sklearn digits, tiny budget."""
    x, y = _digits()
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, held_out = perm[:1200], perm[1200:]

    def train_model(lam):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(16 * 4 * 4, 10))
        optimizer = torch.optim.Adam(model.parameters(), 1e-2)
        jafr = JaFRLoss(lam)
        for epoch in range(1):
            order = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))]
            for start in range(0, len(order), 64):
                b = order[start:start + 64]
                out = jafr(model, x[b], y[b])
                optimizer.zero_grad()
                out.loss.backward()
                optimizer.step()
        out = JaFRLoss(0.0)(model, x[held_out], y[held_out], return_input_gradient=True)
        accuracy = (out.logits.argmax(1) == y[held_out]).float().mean().item()
        return frequency_bias(out.input_gradient).item(), accuracy

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread avoids oversubscription on a busy machine
    try:
        standard_bias, standard_acc = train_model(0.0)
        jafr_bias, jafr_acc = train_model(0.1)
    finally:
        torch.set_num_threads(threads)
    assert standard_acc > 0.6 and jafr_acc > 0.6  # both actually learned the digits (10 classes)
    assert jafr_bias > standard_bias + 1.0, (standard_bias, jafr_bias)
