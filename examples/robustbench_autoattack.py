"""Evaluate a classifier with AutoAttack from a registry install (pyautoattack or torchattacks backend).

Run: python examples/robustbench_autoattack.py
"""
from freqplug.data import sample_images
from freqplug.eval import AutoAttackRunner, evaluate_frequency_robustness
from freqplug.models import cifar10_resnet18  # or: freqplug.compat.load_model("Wong2020Fast", model_dir="./models")

model = cifar10_resnet18()
x, y = sample_images("cifar10")
runner = AutoAttackRunner(model, norm="Linf", eps=1 / 255, version="custom", attacks=["apgd-ce"], n_iter=10,
                          n_restarts=1)
result = runner.run(x, y, batch_size=20)  # version="standard" for the full AutoAttack
print(f"backend={result.backend} clean={result.clean_accuracy:.0%} robust={result.robust_accuracy:.0%}")
freq = evaluate_frequency_robustness(model, x, y, attack_result=result)  # Chen2022 eq. 12: low/high-frequency parts
print({band: f"{accuracy:.0%}" for band, accuracy in freq.accuracy.items()})
