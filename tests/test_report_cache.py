"""The stage cache: keyed on the real content of the model, data, settings, seed and versions; files
are read without unpickling arbitrary objects."""

import pickle
import warnings

import pytest
import torch
from helpers import tiny_cnn

from freqplug._io import safe_load
from freqplug.report import cache as cache_module
from freqplug.report import profile

STAGES = ["clean_accuracy", "frequency_bias"]


@pytest.fixture
def small(cifar_samples):
    x, y = cifar_samples[0][:6], cifar_samples[1][:6]
    return tiny_cnn(num_classes=10, seed=0, dtype=torch.float32), x, y


def _run(model, x, y, out, **kwargs):
    return profile({"m": model}, x, y, out=out, preset="fast", stages=STAGES, quiet=True, **kwargs)


def _last_layer(model):
    return model[-1]


def test_permuting_two_rows_of_the_last_layer_misses_the_cache(small, tmp_path):
    model, x, y = small
    first = _run(model, x, y, tmp_path)
    assert first.cached == {"m": []}
    assert _run(model, x, y, tmp_path).cached == {"m": STAGES}  # same model: both stages reused

    permuted = tiny_cnn(num_classes=10, seed=0, dtype=torch.float32)
    with torch.no_grad():
        layer = _last_layer(permuted)
        order = torch.arange(layer.out_features)
        order[[0, 1]] = order[[1, 0]]
        layer.weight.copy_(layer.weight[order])
        layer.bias.copy_(layer.bias[order])
    # Every weight tensor has the same sum as before (what the old key hashed), yet it is another model.
    for (name, a), b in zip(model.state_dict().items(), permuted.state_dict().values()):
        assert float(a.double().sum()) == pytest.approx(float(b.double().sum()), abs=1e-9), name
    second = _run(permuted, x, y, tmp_path)
    assert second.cached == {"m": []}
    fresh = _run(permuted, x, y, None)
    assert second["m"]["frequency_bias"]["b_low"] == fresh["m"]["frequency_bias"]["b_low"]
    assert torch.equal(second.arrays["m"]["clean_accuracy"]["predictions"],
                       fresh.arrays["m"]["clean_accuracy"]["predictions"])


@pytest.mark.parametrize("change", ["data", "labels", "settings", "seed", "threat_model", "version"])
def test_anything_the_result_depends_on_changes_the_key(small, tmp_path, change, monkeypatch):
    model, x, y = small
    _run(model, x, y, tmp_path)
    kwargs = {}
    if change == "data":
        x = x.clone()
        x[0, 0, 0, 0] = 1.0 - x[0, 0, 0, 0]
    elif change == "labels":
        y = y.clone()
        y[[0, 1]] = y[[1, 0]]
    elif change == "settings":
        kwargs["overrides"] = {"batch_size": 3}
    elif change == "seed":
        kwargs["seed"] = 1
    elif change == "threat_model":
        kwargs["threat_model"] = "L2"
    else:
        monkeypatch.setattr(cache_module, "__version__", "999.0")
    assert _run(model, x, y, tmp_path, **kwargs).cached == {"m": []}


def test_cache_files_hold_only_tensors_and_plain_values(small, tmp_path):
    model, x, y = small
    _run(model, x, y, tmp_path)
    for path in (tmp_path / "cache" / "m").glob("*.pt"):
        stored = safe_load(path, "report cache")  # weights_only=True: would raise on any other object
        assert set(stored) == {"format", "key", "result"} and len(stored["key"]) == 64


class _Payload:
    """Unpickling this object would create a file: proof that arbitrary code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_cache_file_with_a_pickled_object_is_not_unpickled(small, tmp_path):
    model, x, y = small
    _run(model, x, y, tmp_path)
    path = tmp_path / "cache" / "m" / "clean_accuracy.pt"
    stored = torch.load(path, weights_only=True)
    marker = tmp_path / "pwned"
    stored["result"]["metrics"]["evil"] = _Payload(marker)
    torch.save(stored, path, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _run(model, x, y, tmp_path)
    assert not marker.exists()
    assert again.cached == {"m": ["frequency_bias"]}  # the tampered file is recomputed and rewritten
    assert any("clean_accuracy" in str(w.message) for w in caught)
    assert "evil" not in safe_load(path, "report cache")["result"]["metrics"]


def test_a_truncated_cache_file_is_recomputed(small, tmp_path):
    model, x, y = small
    first = _run(model, x, y, tmp_path)
    path = tmp_path / "cache" / "m" / "frequency_bias.pt"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.warns(RuntimeWarning, match="frequency_bias"):
        again = _run(model, x, y, tmp_path)
    assert again.cached == {"m": ["clean_accuracy"]}
    assert again["m"]["frequency_bias"] == first["m"]["frequency_bias"]
