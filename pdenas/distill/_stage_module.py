"""A stage of a (compressed) model as a module of its own: its units run one after the other.

After :func:`pdenas.compress` a stage's slots hold the kept blocks, the Global layer (in the first
dropped slot) and identities, at the original's module paths (``Stage.block_paths``). Composing the
modules at those paths is the student stage; it shares its modules with the model, so training it
trains the model's stage in place, and the rest of the network is not even run.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..surgery import Stage

__all__ = ["StageModule", "stage_paths", "stage_state"]


class StageModule(nn.Module):
    """The units of ``stage`` in ``model``, in forward order (the modules are shared, not copied)."""

    def __init__(self, model: nn.Module, stage: Stage) -> None:
        super().__init__()
        self.units = nn.ModuleList(model.get_submodule(path) for path in stage_paths(stage))

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C_in, H_in, W_in), the stage's input
        for unit in self.units:
            x = unit(x)
        return x  # (B, C, H, W), the stage's output


def stage_paths(stage: Stage) -> list[str]:
    """Module paths of the stage's units, in forward order."""
    return [path for block in stage.block_paths for path in block]


def stage_state(model: nn.Module, stage: Stage) -> dict[str, Tensor]:
    """The stage's entries of ``model``'s state dict (detached CPU copies), under the model's keys."""
    prefixes = tuple(f"{path}." for path in stage_paths(stage))
    return {key: value.detach().to("cpu").clone() for key, value in model.state_dict().items() if key.startswith(prefixes)}
