import dataclasses

import pytest
import torch

from pdenas.data import load_dataset
from pdenas.train import TrainingDiverged, TrainRecipe, evaluate, resolve_device, train_model
from pdenas.zoo import create_model


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, val_fraction=0.2, subset=400)


def _model():
    torch.manual_seed(0)
    return create_model("resnet_tiny", in_channels=1)


def test_training_learns_and_is_deterministic(digits):
    budget = TrainRecipe(epochs=4, batch_size=32, lr=0.05)
    before = evaluate(_model(), digits, device="cpu")
    losses: list[float] = []
    a = train_model(_model(), digits, budget, seed=1, device="cpu", on_epoch=lambda e, n, loss: losses.append(loss))
    b = train_model(_model(), digits, budget, seed=1, device="cpu")
    assert losses[-1] < losses[0]
    assert a.accuracy > before + 0.05
    # same seed, same result (to rounding of multi-threaded kernels)
    assert b.final_loss == pytest.approx(a.final_loss, rel=1e-3)
    assert b.accuracy == pytest.approx(a.accuracy, abs=0.02)
    assert a.epochs == 4 and a.train_time > 0


def test_distillation_from_a_teacher_runs(digits):
    budget = TrainRecipe(epochs=1, batch_size=32, distillation=0.5)
    teacher = _model()
    result = train_model(_model(), digits, budget, seed=0, device="cpu", teacher=teacher)
    assert 0 <= result.accuracy <= 1


def test_divergence_is_reported(digits):
    budget = dataclasses.replace(TrainRecipe(epochs=2, batch_size=32), lr=1e8)
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        train_model(_model(), digits, budget, seed=0, device="cpu")


def test_device_auto_and_unavailable_cuda():
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_batchnorm_recalibration_matches_the_data(digits):
    from pdenas.train import recalibrate_batchnorm

    model = _model()
    bn = model.bn1
    recalibrate_batchnorm(model, digits, batch_size=50, device=torch.device("cpu"), max_images=10_000)
    with torch.no_grad():
        pres = [model.conv1(x) for x, _ in digits.train_batches(50, seed=0, augment=False)]  # inputs of bn1
    # a cumulative average over equal batches: the mean of the batch means and of the batch variances
    torch.testing.assert_close(bn.running_mean, torch.stack([p.mean((0, 2, 3)) for p in pres]).mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, torch.stack([p.var((0, 2, 3)) for p in pres]).mean(0), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1 and model.training
