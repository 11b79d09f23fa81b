"""Search configurations: every shipped file loads; a wrong file gets one clear line."""

from pathlib import Path

import pytest

from pdenas.search import SearchConfig, SearchConfigError, SearchSpace, default_space_path
from pdenas.train import TrainRecipe

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "search_spaces").glob("*.yaml"))


def test_default_space_is_the_shipped_default():
    assert default_space_path().resolve() == (ROOT / "search_spaces" / "default.yaml").resolve()


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_spaces_load(path):
    space = SearchConfig.from_yaml(path)
    assert space.objectives[0] == "accuracy"
    assert space.directions[0] == "maximize"


def test_the_file_its_space_and_its_budget_are_three_types():
    config = SearchConfig.from_yaml(default_space_path())
    assert type(config.space) is SearchSpace and type(config.budget) is TrainRecipe
    import pdenas.search

    assert not hasattr(pdenas.search, "TrainBudget") and not hasattr(pdenas.search, "StageChoices")


def test_every_key_is_documented():
    readme = (ROOT / "search_spaces" / "README.md").read_text()
    space = SearchConfig()
    keys = [k for k in space.to_dict() if k != "source"]
    for section in ("space", "budget", "stagewise", "constraints", "sampler", "halving", "latency"):
        keys += list(getattr(space, section).__dict__)
    keys += list(space.stagewise.recipe.__dict__) + ["step"]
    missing = [k for k in keys if f"`{k}`" not in readme]
    assert not missing


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,message",
    [
        ("budgt:\n  epochs: 2\n", "unknown key 'budgt' (did you mean 'budget'?)"),
        ("budget:\n  epoch: 2\n", "unknown key 'budget.epoch' (did you mean 'budget.epochs'?)"),
        ("space:\n  iteratons: [1, 3]\n", "did you mean 'space.iterations'?"),
        ("budget:\n  epochs: three\n", "'budget.epochs' must be an integer, got str 'three'"),
        ("space:\n  global_layer: maybe\n", "'space.global_layer[0]' must be true or false"),
        ("space:\n  dt: {low: 0.5, high: 0.1}\n", "'space.dt' is an empty range: low=0.5 > high=0.1"),
        ("space:\n  keep: [4, 2]\n", "'space.keep' is an empty range"),
        ("space:\n  diffusion: []\n", "'space.diffusion' is an empty list"),
        ("objectives: [accuracy, macz]\n", "unknown objective 'macz' (did you mean 'macs'?)"),
        ("sampler:\n  name: cmaes\n", "'sampler.name' must be tpe, nsga2, gp or random"),
        ("budget:\n  distillation: 1.5\n", "'budget.distillation' must lie in [0, 1], got 1.5"),
        ("space:\n  dt: {low: 0.1, high: 0.4, step: 0.1, log: true}\n", "'space.dt.step' needs log: false"),
        ("space:\n  dt: {low: 0.1, high: 0.4, step: 0.25}\n", "'space.dt.step' = 0.25 does not divide high - low = 0.3"),
        ("space:\n  dt: {low: 0.1, high: 0.4, step: -0.1}\n", "'space.dt.step' must be a number > 0 (or null: no grid), got -0.1"),
        ("space:\n  global_init: [random, zero]\n", "'space.global_init' choices: init must be 'random' or 'identity', got 'zero'"),
        ("space:\n  global_init: [identity]\n  residual: [true]\n", "'space.global_init: [identity]' cannot go with 'space.residual: [true]'"),
        ("halving:\n  eta: 1\n", "'halving.eta' must be a number > 1"),
        ("halving:\n  stage_rung: losses\n", "'halving.stage_rung' must be accuracy, loss or off, got 'losses'"),
        ("halving:\n  min_images: 0\n", "'halving.min_images' must be >= 1"),
        ("halving:\n  etta: 2\n", "unknown key 'halving.etta' (did you mean 'halving.eta'?)"),
        ("halving:\n  enabled: yes please\n", "'halving.enabled' must be true or false"),
        ("stagewise:\n  images: 0\n", "'stagewise.images' must be >= 1, got 0"),
        ("stagewise:\n  enabled: yes please\n", "'stagewise.enabled' must be true or false"),
        ("stagewise:\n  recipe:\n    lr: 0\n", "'stagewise.recipe.lr' must be a number > 0, got 0.0"),
        ("stagewise:\n  recipe:\n    epoch: 2\n", "unknown key 'stagewise.recipe.epoch' (did you mean 'stagewise.recipe.epochs'?)"),
        ("stagewise:\n  recipe:\n    precision: fp16\n", "'stagewise.recipe.precision' must be fp32, bf16 or auto, got 'fp16'"),
        ("constraints:\n  max_macs: -3\n", "'constraints.max_macs' must be > 0"),
        ("seed: -1\n", "'seed' must be a whole number in [0, 2147483648), got -1"),
        ("seed: 2147483648\n", "'seed' must be a whole number in [0, 2147483648)"),
        ("num_classes: 0\n", "'num_classes' must be >= 1 (or null: the dataset's), got 0"),
        ("sampler:\n  seed: -3\n", "'sampler.seed' must be a whole number in [0, 2147483648), got -3"),
        ("sampler:\n  startup_trials: -1\n", "'sampler.startup_trials' must be >= 0, got -1"),
        ("trials: 0\n", "'trials' must be >= 1, got 0"),
        ("image_size: 2\n", "'image_size' must be >= 4, got 2"),
        ("normalize: {mean: [0.5], std: [0.2, 0.2]}\n", "'normalize' needs one mean and one std > 0 per image channel"),
        ("normalize: {mean: [0.5], std: [0]}\n", "'normalize' needs one mean and one std > 0 per image channel"),
        ("normalize: {mean: [0.5]}\n", "normalize"),
        ("normalize: {mean: 0.5, std: 0.2, sd: 1}\n", "unknown key 'normalize.sd' (did you mean 'normalize.std'?)"),
        ("latency:\n  runtime: tflite\n", "'latency.runtime' must be torch, torchscript, onnxruntime or aoti, got 'tflite'"),
        ("latency:\n  runtime: [onnxruntime]\n", "'latency.runtime' must be a string, got list"),
        ("latency:\n  batch_size: 0\n", "'latency.batch_size' must be >= 1, got 0"),
        ("latency:\n  threads: 0\n", "'latency.threads' must be >= 1 (or null: the worker's torch threads), got 0"),
        ("latency:\n  thread: 2\n", "unknown key 'latency.thread' (did you mean 'latency.threads'?)"),
        ("budget:\n  epochs: 0\n", "'budget.epochs' must be an integer >= 1, got 0"),
        ("budget:\n  subset: 0\n", "'budget.subset' must be an integer >= 1 or null, got 0"),
        ("budget:\n  val_fraction: 1.5\n", "'budget.val_fraction' must lie in (0, 1), got 1.5"),
        ("model: [a, b\n", "not valid YAML at line"),
        ("- just\n- a list\n", "the top level must be a mapping"),
    ],
)
def test_wrong_file_gets_one_clear_line(tmp_path, text, message):
    with pytest.raises(SearchConfigError) as info:
        SearchConfig.from_yaml(write(tmp_path, text))
    text_out = str(info.value)
    assert message in text_out
    assert "\n" not in text_out
    assert str(tmp_path / "space.yaml") in text_out


def test_a_distillation_weight_needs_no_weights_file(tmp_path):
    """Without ``weights`` trial 0 trains the original, which is then every candidate's teacher."""
    assert SearchConfig.from_yaml(write(tmp_path, "budget:\n  distillation: 0.5\n")).budget.distillation == 0.5


def test_distillation_defaults_on_only_for_a_given_original(tmp_path):
    """Unset, the weight is 0.7 from weights the user gives (a well-trained teacher) and 0 from the original
    trial 0 trains on the same budget; whatever the file says wins, and the stored configuration keeps it."""
    from pdenas.search._config import DISTILLATION_WITH_WEIGHTS

    assert SearchConfig.from_yaml(write(tmp_path, "budget:\n  epochs: 2\n")).budget.distillation == 0.0
    given = SearchConfig.from_yaml(write(tmp_path, "budget:\n  epochs: 2\n"), weights="w.pt")  # as --weights does
    assert given.budget.distillation == DISTILLATION_WITH_WEIGHTS == 0.7 and given.budget.epochs == 2
    assert SearchConfig.from_yaml(write(tmp_path, "weights: w.pt\n")).budget.distillation == 0.7
    assert SearchConfig.from_yaml(write(tmp_path, "weights: w.pt\nbudget:\n  distillation: 0\n")).budget.distillation == 0.0
    assert SearchConfig.from_dict(given.with_overrides(weights=None).to_dict()).budget.distillation == 0.7


def test_the_dt_grid_and_the_stagewise_section_are_read(tmp_path):
    config = SearchConfig.from_yaml(write(tmp_path, (
        "space:\n  dt: {low: 0.1, high: 0.4, step: 0.1}\n  global_init: [random, identity]\n"
        "stagewise:\n  enabled: false\n  images: 500\n  recipe: {epochs: 3, lr: 0.005, precision: fp32}\n"
    )))
    assert config.space.dt.step == 0.1 and not config.space.dt.log
    assert config.space.global_init == ["random", "identity"]
    assert (config.stagewise.enabled, config.stagewise.images, config.stagewise.val_images) == (False, 500, 1000)
    assert (config.stagewise.recipe.epochs, config.stagewise.recipe.lr, config.stagewise.recipe.precision) == (3, 0.005, "fp32")
    assert SearchConfig.from_dict(config.to_dict()) == config  # the study stores it as JSON


def test_missing_file(tmp_path):
    with pytest.raises(SearchConfigError, match="does not exist"):
        SearchConfig.from_yaml(tmp_path / "nope.yaml")


def test_overrides_win_and_dotted_keys(tmp_path):
    path = write(tmp_path, "trials: 5\nbudget:\n  epochs: 2\n")
    space = SearchConfig.from_yaml(path, trials=9, **{"budget.epochs": 4, "constraints.max_macs": 0.5, "model": None})
    assert (space.trials, space.budget.epochs, space.constraints.max_macs, space.model) == (9, 4, 0.5, "resnet_tiny")


def test_round_trip_and_fingerprint_ignores_trials():
    space = SearchConfig.from_yaml(default_space_path())
    again = SearchConfig.from_dict(space.to_dict())
    assert again == space
    assert space.with_overrides(trials=99).fingerprint() == space.fingerprint()
    assert space.with_overrides(model="resnet20").fingerprint() != space.fingerprint()
