import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
