"""cifar10/cifar100 offline: one line naming the cache folder, the reason and the --dataset way out."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pdenas.data import DataError, load_dataset


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No name resolves, as on a machine without network (so the test never downloads 170 MB)."""

    def no_network(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)


@pytest.mark.parametrize(("name", "title"), [("cifar10", "CIFAR-10"), ("cifar100", "CIFAR-100")])
def test_cifar_offline_message(name: str, title: str, tmp_path: Path, offline: None) -> None:
    cache = tmp_path / "tv-cache"
    with pytest.raises(DataError) as info:
        load_dataset(name, cache_dir=cache)
    message = str(info.value)
    assert message.startswith(f"{title} is not in {cache} and cannot be downloaded (")
    assert "Name or service not known" in message
    assert message.endswith("pass --dataset PATH to an ImageFolder folder or .tar.gz instead")
    assert "\n" not in message
    assert socket.getdefaulttimeout() is None  # the download's socket timeout was restored
