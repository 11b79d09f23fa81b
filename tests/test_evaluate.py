"""Exported models say how to feed them, and ``pdenas evaluate`` (issue 13 item 7): a tiny real study (the
real search: resnet_tiny on 240 digit images, 1 epoch, the original and one candidate), the candidate
exported in every fast format, and a real ImageFolder of the study's validation images written as PNG files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import pdenas
from pdenas.cli import main
from pdenas.data import load_dataset
from pdenas.export import CARD_KEY, ExportError, ModelCard, Preprocessing, evaluate_model, export_trial
from pdenas.search import SearchConfig, StudyLocation, search

from .commands import run_pdenas_in_terminal
from .test_export import TINY  # the tiny study of the export's tests

pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated:FutureWarning")
ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path_factory, one_thread):
    """Decoded images go to a folder of the test run's, not the user's cache; one torch thread."""
    monkeypatch.setenv("PDENAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """The study's candidate exported as model.pt, model.onnx and model.torchscript.pt, the study's own data
    (split, training statistics) and a folder DIR/<class>/<image>.png of its validation images."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evaluate")
    (root / "tiny.yaml").write_text(TINY.replace("trials: 3", "trials: 2"))  # the original and a candidate
    config = SearchConfig.from_yaml(root / "tiny.yaml")
    assert search(config, location=StudyLocation(root / "study")).completed == 2
    result = export_trial(root / "study", trial=1, out=root / "model", formats="onnx,torchscript")
    torch.set_num_threads(before)
    data = load_dataset("digits", seed=0, val_fraction=0.2, subset=240)  # the study's split and statistics
    folder = root / "pngs"
    for i, (image, label) in enumerate(zip(data.val_x, data.val_y, strict=True)):
        path = folder / data.classes[int(label)] / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy(), mode="L").save(path)  # (H, W) grayscale
    return {"result": result, "data": data, "folder": folder, "paths": result.paths}


def _eager_predictions(exported: dict) -> list[str]:
    """The exported model's predictions on the validation images, fed by pdenas' own data code."""
    model = pdenas.load_compressed(exported["paths"]["pt"])
    data = exported["data"]
    with torch.no_grad():
        labels = torch.cat([model(x).argmax(1) for x, _ in data.val_batches(128)])
    return [data.classes[int(i)] for i in labels]


def test_every_file_carries_the_same_card(exported):
    result, data = exported["result"], exported["data"]
    card = result.card
    assert card.classes == tuple(str(d) for d in range(10)) and card.preprocessing == Preprocessing.from_data(data)
    assert card.preprocessing.color_mode == "L" and card.preprocessing.input_size == (1, 32, 32)
    assert card.model == "resnet_tiny" and card.cost.macs == result.macs and card.accuracy == result.accuracy
    assert card.latency.runtime == "torch" and card.latency.median_ms == result.latency_ms

    paths = exported["paths"]
    assert ModelCard.from_dict(pdenas.load_compressed(paths["pt"]).pdenas_metadata["model_card"]) == card
    import onnxruntime

    session = onnxruntime.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    assert ModelCard.from_json(session.get_modelmeta().custom_metadata_map[CARD_KEY]) == card
    extra = {CARD_KEY: ""}
    torch.jit.load(str(paths["torchscript"]), _extra_files=extra)
    assert ModelCard.from_json(extra[CARD_KEY]) == card


def _readme_example() -> str:
    """The README's example of running model.onnx with onnxruntime, PIL and numpy."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    (block,) = [b for b in blocks if "custom_metadata_map" in b]
    return block


def test_the_readme_example_runs_the_onnx_file_without_pdenas(exported, tmp_path):
    """The README's block, run as written where pdenas cannot be imported, on the PNG files: the labels it
    prints are the eager model's predictions on the same images fed by pdenas' data code."""
    block = _readme_example()
    first, rest = block.split("\n", 1)
    assert first.startswith("model, images = ")
    images = sorted(str(p) for p in exported["folder"].rglob("*.png"))  # class/index.png: the validation order by name
    order = sorted(range(len(images)), key=lambda i: Path(images[i]).name)  # back to the validation split's order
    images = [images[i] for i in order]
    script = (f"import sys\nsys.modules['pdenas'] = None\nmodel, images = {str(exported['paths']['onnx'])!r}, {images!r}\n"
              + rest + "\nprint(json.dumps(labels))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    labels = json.loads(done.stdout)
    assert labels == _eager_predictions(exported)


def test_evaluate_gives_the_same_accuracy_for_every_format(exported):
    result = exported["result"]
    evaluations = {name: evaluate_model(exported["paths"][name], exported["folder"], latency=False)
                   for name in ("pt", "onnx", "torchscript")}
    counts = {name: e.correct for name, e in evaluations.items()}
    assert len(set(counts.values())) == 1, counts
    onnx = evaluations["onnx"]
    assert onnx.format == "onnx" and onnx.accuracy_runtime == "onnxruntime" and evaluations["pt"].format == "checkpoint"
    assert onnx.images == 360 and onnx.classes == tuple(str(d) for d in range(10)) and not onnx.left_out and not onnx.absent
    # the model's own statistics, the study's validation images: the export's accuracy, to an image
    assert abs(onnx.accuracy - result.accuracy) <= 1 / 360 + 1e-12
    assert onnx.cost.macs == result.macs == evaluations["pt"].cost.macs  # the card's, and the checkpoint's own
    assert onnx.original_cost.macs == result.original["macs"]  # the original architecture, rebuilt from the card


def _copy(folder: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(folder, copy)
    return copy


def test_classes_are_matched_by_name_and_the_datasets_statistics_are_not_used(exported, tmp_path, capsys):
    base = evaluate_model(exported["paths"]["onnx"], exported["folder"], latency=False, original=False)
    extra = _copy(exported["folder"], tmp_path, "extra")
    (extra / "zebra").mkdir()
    for i in range(20):  # white images: they change the dataset's mean and std a lot
        Image.new("L", (32, 32), 255).save(extra / "zebra" / f"{i}.png")
    assert main(["evaluate", str(exported["paths"]["onnx"]), "--dataset", str(extra)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pdenas: error: the dataset has 1 class the model does not have (zebra; the model's: 0, 1, 2")
    assert "--known-classes-only" in err and err.count("\n") == 1

    kept = evaluate_model(exported["paths"]["onnx"], extra, known_classes_only=True, latency=False, original=False)
    assert kept.left_out == ("zebra",) and kept.images == base.images and kept.correct == base.correct
    assert any("left out zebra" in note for note in kept.notes)

    fewer = _copy(exported["folder"], tmp_path, "fewer")
    shutil.rmtree(fewer / "8")
    shutil.rmtree(fewer / "9")
    part = evaluate_model(exported["paths"]["onnx"], fewer, latency=False, original=False)
    assert part.absent == ("8", "9") and part.classes == tuple(str(d) for d in range(8))
    assert part.images == base.images - sum(1 for _ in (exported["folder"] / "8").iterdir()) - sum(1 for _ in (exported["folder"] / "9").iterdir())
    assert any("holds 8 of the model's 10 classes" in note for note in part.notes)


def test_cli_evaluate_prints_accuracy_costs_and_latency_next_to_the_original(exported, capsys):
    assert main(["evaluate", str(exported["paths"]["pt"]), "--dataset", str(exported["folder"]), "--runtime", "onnxruntime",
                 "--batch-size", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("accuracy", "MACs", "conv MACs", "params", "latency"):
        assert re.search(rf"^\s*{row}\s", out, flags=re.M), row
    assert re.search(r"accuracy: \d+ of 360 images \(10 classes\) of ImageFolder .*, run in torch, fed as the model card says", out)
    assert "latency: onnxruntime, batch 2, 1 thread, median per call on cpu" in out


def test_cli_evaluate_in_a_terminal(exported):
    done = run_pdenas_in_terminal("evaluate", str(exported["paths"]["torchscript"]), "--dataset", str(exported["folder"]),
                                  "--threads", "1", timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    assert re.search(r"^model.torchscript.pt\s*$", done.stdout, flags=re.M)
    assert re.search(r"accuracy: \d+ of 360 images \(10 classes\) of ImageFolder", done.stdout)
    assert "latency: torchscript, batch 1, 1 thread" in done.stdout and "Traceback" not in done.stdout


@pytest.mark.parametrize(
    "make,argv,message",
    [
        (None, ["{tmp}/missing.onnx", "--dataset", "{folder}"], "no model at {tmp}/missing.onnx: pass a pdenas checkpoint"),
        ("text", ["{tmp}/notes.onnx", "--dataset", "{folder}"], "{tmp}/notes.onnx is not a model onnxruntime can load"),
        ("zip", ["{tmp}/weights.pt", "--dataset", "{folder}"], "{tmp}/weights.pt is not a model: {tmp}/weights.pt is not a pdenas"),
        ("nocard", ["{tmp}/bare.pt", "--dataset", "{folder}"], "{tmp}/bare.pt has no model card (exported by an older pdenas)"),
        (None, ["{onnx}", "--dataset", "{tmp}/nowhere"], "dataset path {tmp}/nowhere does not exist"),
        (None, ["{onnx}", "--dataset", "{folder}", "--runtime", "torch"],
         "{onnx} is an ONNX file, which runs in onnxruntime only: pass --runtime onnxruntime"),
    ],
)
def test_bad_input_is_one_line(exported, tmp_path, capsys, make, argv, message):
    if make == "text":
        (tmp_path / "notes.onnx").write_text("not a model\n")
    if make == "zip":
        torch.save({"weight": torch.zeros(2)}, tmp_path / "weights.pt")
    if make == "nocard":
        model = pdenas.load_compressed(exported["paths"]["pt"])
        pdenas.save_compressed(tmp_path / "bare.pt", model, plan=model.pdenas_plan, model_spec="resnet_tiny", input_size=(1, 32, 32))
    names = {"tmp": str(tmp_path), "folder": str(exported["folder"]), "onnx": str(exported["paths"]["onnx"])}
    argv = [a.format(**names) for a in argv]
    assert main(["evaluate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pdenas: error: " + message.format(**names)), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_runtime_that_is_not_installed_is_one_line(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ExportError, match=r"is an ONNX file, which runs in onnxruntime, and onnxruntime is not installed: "
                                          r"pip install 'pdenas\[onnx\]'$"):
        evaluate_model(exported["paths"]["onnx"], exported["folder"])
    with pytest.raises(ExportError, match=r"^runtime 'onnxruntime' needs onnxruntime: pip install 'pdenas\[onnx\]'$"):
        evaluate_model(exported["paths"]["pt"], exported["folder"], runtime="onnxruntime")
