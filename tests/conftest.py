import os
import socket

# Cap threads before torch starts its pools: tests that spawn worker processes (torch.distributed,
# the CLI) would otherwise run 2-3 processes x all cores on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def reference_model():
    from freqplug.models import cifar10_resnet18

    return cifar10_resnet18()


@pytest.fixture(scope="session")
def cifar_samples():
    from freqplug.data import sample_images

    return sample_images("cifar10")


@pytest.fixture
def no_network(monkeypatch):
    """Fail any attempt to open a network connection during the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)
