"""The variant store (issue 13, item 2): each variant trained once, reused by later requests and by other
processes; a crashed writer leaves no entry and no held lock."""

from __future__ import annotations

import multiprocessing
import time

import pytest
import torch
from filelock import FileLock, Timeout

from pdenas.distill import StageRecipe, VariantStore, make_variant
from pdenas.nn import GlobalLayerConfig

from .conftest import RECIPE
from .distill_helpers import ask_for_variant, state_digest, train_until_killed


@pytest.fixture(scope="module")
def weights(original, tmp_path_factory):
    path = tmp_path_factory.mktemp("original") / "weights.pt"
    torch.save(original.state_dict(), path)
    return path


def test_a_stored_variant_is_reused_not_retrained(original, features, tmp_path):
    store = VariantStore(tmp_path)
    variant = make_variant("layer3", 2, GlobalLayerConfig(iterations=2), features=features, recipe=RECIPE)
    assert variant not in store
    first = store.get_or_distill(original, variant, features, device="cpu")
    assert not first.reused and variant in store
    written = store.path(variant).stat().st_mtime_ns
    second = store.get_or_distill(original, variant, features, device="cpu")
    assert second.reused and store.path(variant).stat().st_mtime_ns == written
    assert second == first.__class__(**{**first.__dict__, "reused": True})  # the same figures
    assert state_digest(second.state_dict) == state_digest(first.state_dict)
    assert [r.variant for r in store.results()] == [variant]


def test_two_processes_train_a_shared_variant_once(weights, features, tmp_path):
    variant = make_variant("layer1", 1, GlobalLayerConfig(iterations=1, init="identity"), features=features, recipe=RECIPE)
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    workers = [
        ctx.Process(target=ask_for_variant, args=(weights, features.folder, tmp_path, variant.to_dict(), barrier, out))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    answers = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert sorted(reused for reused, _ in answers) == [False, True]  # one trained, the other waited and loaded
    assert answers[0][1] == answers[1][1]  # identical weights
    assert len(list(tmp_path.glob("*.pt"))) == 1


def test_a_crashed_writer_leaves_no_entry_and_no_lock(weights, features, tmp_path):
    slow = StageRecipe(epochs=500, batch_size=8, precision="fp32")  # minutes: it is killed long before
    variant = make_variant("layer1", 3, None, features=features, recipe=slow)
    store = VariantStore(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    worker = ctx.Process(target=train_until_killed, args=(weights, features.folder, tmp_path, variant.to_dict()))
    worker.start()
    lock = FileLock(tmp_path / f"{variant.key()}.lock", timeout=0)
    deadline = time.monotonic() + 120
    while True:  # wait until the worker holds the variant's lock (it is training)
        assert time.monotonic() < deadline and worker.is_alive(), "the worker never started training"
        try:
            with lock:
                pass
        except Timeout:
            break
        time.sleep(0.05)
    worker.kill()  # SIGKILL mid-training
    worker.join(timeout=30)
    assert store.get(variant) is None and not list(tmp_path.glob("*.pt"))
    with lock:  # released by the operating system: the next request would train it at once
        pass
