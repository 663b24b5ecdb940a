"""`sendit export`: an ONNX export labels texts as its run does (fp32: same predictions, logits within the
tolerance), int8 loads and predicts, bad input exits 2 writing nothing, and predicting from an export
never imports torch."""
import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import LABELS, tiny_data, tiny_run
from typer.testing import CliRunner

from sendit.artifacts import Predictor
from sendit.calibration import expected_calibration_error, fit_temperature, nll, softmax
from sendit.cli import app
from sendit.deploy import MANIFEST_FILE, MODEL_FILE, ExportError, ExportPredictor
from sendit.export import FP32_TOLERANCE, check_accuracy_loss, export_run
from sendit.predict import open_predictor

runner = CliRunner()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return SimpleNamespace(path=root, data=tiny_data(root))


@pytest.fixture(scope="module")
def lora(root):
    run = tiny_run(root.path / "lora", root.data)
    export_run(run, root.path / "lora-onnx")
    return run, root.path / "lora-onnx"


def agree(run, export_dir) -> float:
    """Max |logit difference| between the run (torch) and its export on the run's test texts (the export
    checked itself on the validation texts) and on raw ones; asserts every prediction is the same."""
    import pandas as pd

    texts = pd.read_csv(run / "predictions.csv", keep_default_na=False)["text"].tolist()
    texts += ["@someone LOVED it!!! http://x.co #great", "", "so   BAD &amp; sad"]
    torch_logits = Predictor.from_run(run).predict(texts, precision="fp32")
    exported = ExportPredictor.from_export(export_dir)
    onnx_logits = exported.predict(texts, batch_size=7) * exported.temperature
    assert (torch_logits.argmax(1) == onnx_logits.argmax(1)).all()
    return float(np.abs(torch_logits - onnx_logits).max())


# Every kind of method (folded by PEFT, plain weights, PEFT kept whole) on tiny-bert, and LoRA on every
# other architecture; decoders right- and left-padded.
CASES = [("tiny-bert", m, None) for m in ("full", "dora", "ia3", "vera", "prompt_tuning")] + [
    ("tiny-distilbert", "lora", None), ("tiny-roberta", "lora", None), ("tiny-opt", "lora", "left"),
    ("tiny-gpt2", "lora", None), ("tiny-gpt2", "prompt_tuning", "left"), ("tiny-gpt-neo", "lora", "left")]


@pytest.mark.parametrize("model, method, padding_side", CASES)
def test_export_labels_texts_as_its_run(root, model, method, padding_side):
    name = f"{model}-{method}-{padding_side}"
    run = tiny_run(root.path / name, root.data, method=method, model=model, padding_side=padding_side)
    manifest = export_run(run, root.path / f"{name}-onnx")
    assert manifest["check"]["fp32"]["max_abs_logit_diff"] <= FP32_TOLERANCE
    assert agree(run, root.path / f"{name}-onnx") <= FP32_TOLERANCE


def test_lora_export_directory_and_manifest(lora):
    run, export_dir = lora
    assert agree(run, export_dir) <= FP32_TOLERANCE
    assert sorted(p.name for p in export_dir.iterdir()) == [MANIFEST_FILE, MODEL_FILE, "tokenizer.json"]
    assert not list(export_dir.parent.glob(".lora-onnx*"))  # no temporary directory left
    manifest = json.loads((export_dir / MANIFEST_FILE).read_text())
    assert manifest["label_names"] == LABELS and manifest["max_length"] == 32 and manifest["clean"]["urls"]
    assert manifest["source"]["method"] == "lora" and manifest["versions"]["onnxruntime"]
    calibration = manifest["calibration"]
    assert calibration["val_nll_after"] <= calibration["val_nll_before"]
    assert set(manifest["sha256"]) == {MODEL_FILE, "tokenizer.json"}


def test_temperature_and_calibration_error():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(true_logits)])
    fitted = fit_temperature(3 * true_logits, labels)  # overconfident by 3x
    assert 2.7 < fitted < 3.3
    assert nll(3 * true_logits, labels, fitted) < nll(3 * true_logits, labels)
    confident = np.array([[0.9, 0.1]] * 10)
    assert expected_calibration_error(confident, np.array([0] * 9 + [1])) == pytest.approx(0.0)
    assert expected_calibration_error(confident, np.ones(10, dtype=int)) == pytest.approx(0.9)


def test_int8_export_loads_and_predicts(root, lora):
    run, _ = lora
    manifest = export_run(run, root.path / "lora-int8", quantize="int8", max_loss=100)
    int8 = manifest["check"]["int8"]
    assert manifest["precision"] == "int8" and 0 <= int8["agreement"] <= 1
    exported = ExportPredictor.from_export(root.path / "lora-int8")
    probs = softmax(exported.predict(["i love this", "i hate this"]))
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1)
    fp32 = (root.path / "lora-onnx" / MODEL_FILE).stat().st_size
    assert (root.path / "lora-int8" / MODEL_FILE).stat().st_size < fp32 / 2


def test_int8_accuracy_loss_beyond_max_loss_is_refused():
    reference = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = np.array([1, 0, 1, 0])
    flipped = reference.copy()
    flipped[0] = [1.0, 0.0]  # one of four validation texts now wrong: 25 points lost
    assert check_accuracy_loss(reference, flipped, labels, 30, "int8")["loss_points"] == 25
    with pytest.raises(ExportError, match="int8 loses 25.00 points"):
        check_accuracy_loss(reference, flipped, labels, 20, "int8")


@pytest.mark.parametrize("compute_dtype", ["auto", "float32", "bfloat16"])
def test_qlora_is_dequantized_then_folded(root, compute_dtype):
    """Computing in float32 (or `auto`, the default: float32 in an fp32 run), the run and its export compute the
    same: identical predictions, logits within the tolerance (the folded weights are exactly the 4-bit ones plus
    LoRA's update). Computing in bf16, the export is checked for lost accuracy instead, and stays close to the run."""
    pytest.importorskip("bitsandbytes")
    run = tiny_run(root.path / f"qlora-{compute_dtype}", root.data, method="qlora",
                   options={"compute_dtype": compute_dtype})
    manifest = export_run(run, root.path / f"qlora-{compute_dtype}-onnx", max_loss=100)
    if compute_dtype != "bfloat16":
        assert manifest["check"]["fp32"]["max_abs_logit_diff"] <= FP32_TOLERANCE
        assert agree(run, root.path / f"qlora-{compute_dtype}-onnx") <= FP32_TOLERANCE
    else:
        assert manifest["check"]["fp32"]["agreement"] >= 0.9 and "max_abs_logit_diff" not in manifest["check"]["fp32"]


def test_bad_input_exits_2_and_writes_nothing(root, lora):
    run, export_dir = lora
    weightless = shutil.copytree(run, root.path / "weightless")
    (weightless / "adapter.safetensors").unlink()
    out = root.path / "never"
    for args, message in (([str(weightless)], "missing adapter.safetensors"),
                          ([str(run), "--format", "tflite"], "--format 'tflite'"),
                          ([str(run), "--quantize", "int4"], "--quantize 'int4'")):
        result = runner.invoke(app, ["export", *args, "-o", str(out)])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert not out.exists()
    before = {p.name: p.stat().st_mtime_ns for p in export_dir.iterdir()}
    result = runner.invoke(app, ["export", str(run), "-o", str(export_dir)])
    assert result.exit_code == 2 and "--force" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in export_dir.iterdir()} == before
    assert not [p for p in root.path.iterdir() if p.name.startswith(".")]  # no temporary directory


def test_force_replaces_and_a_changed_file_is_refused(root, lora):
    run, _ = lora
    target = root.path / "forced"
    target.mkdir()
    (target / "old.txt").write_text("old")
    result = runner.invoke(app, ["export", str(run), "-o", str(target), "--force"])
    assert result.exit_code == 0, result.output
    assert "predictions identical" in result.output and not (target / "old.txt").exists()
    with (target / MODEL_FILE).open("ab") as model:
        model.write(b"\0")
    result = runner.invoke(app, ["predict", str(target), "hello"])
    assert result.exit_code == 2 and "sha256 differs" in " ".join(result.output.split()), result.output


def test_predict_and_serve_an_export_without_torch(lora):
    """A new process: `sendit predict EXPORT` and a server of exports import neither torch nor transformers."""
    run, export_dir = lora
    code = ("import sys; from sendit.cli import app\n"
            f"app(['predict', {str(export_dir)!r}, 'i love it', '-o', 'jsonl'], standalone_mode=False)\n"
            "from sendit.serve import create_app\n"
            f"create_app([{str(export_dir)!r}])\n"
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    row, loaded = out.stdout.splitlines()[-2:]
    assert loaded == "[]"
    expected = softmax(ExportPredictor.from_export(export_dir).predict(["i love it"]))[0]
    assert np.allclose([json.loads(row)[f"p_{name}"] for name in LABELS], expected, atol=1e-6)


def test_a_server_mixes_exports_and_runs(lora):
    from fastapi.testclient import TestClient

    from sendit.serve import create_app

    run, export_dir = lora
    texts = ["i love this", "what an awful day", ""]
    with TestClient(create_app([f"onnx={export_dir}", f"torch={run}"])) as client:
        listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert listed["onnx"]["method"] == "lora" and listed["onnx"]["base_model"] == "tiny-bert"
        answers = {name: client.post("/v1/predict", json={"texts": texts, "model": name}).json()["predictions"]
                   for name in ("onnx", "torch")}
    assert [p["label"] for p in answers["onnx"]] == [p["label"] for p in answers["torch"]]
    expected = softmax(open_predictor(export_dir).predict(texts))
    got = np.array([[p["probabilities"][name] for name in LABELS] for p in answers["onnx"]])
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_an_export_asked_for_a_gpu_device_exits_2_naming_it(lora):
    _, export_dir = lora
    out = runner.invoke(app, ["predict", str(export_dir), "so happy", "--device", "cuda"])
    assert out.exit_code == 2 and "an export runs on the CPU" in " ".join(out.output.split()), out.output
