"""`sendit export`: a saved run as an ONNX model a CPU runs without torch (`sendit.deploy` reads it back).

1. Load the run and fold its adapter into the base weights where the method declares it `foldable`
   (PEFT's merge_and_unload: LoRA, DoRA, IA3, VeRA; QLoRA's 4-bit layers dequantised to float32 first,
   see methods/qlora.py); full, BitFit, head-only and two-phase runs are plain models already, and
   prompt tuning is exported with its virtual tokens (the PEFT wrapper traces as it is).
2. Trace it with torch.onnx's TorchScript exporter (`dynamo=False`): on torch 2.13 + transformers 5
   it exports every tiny architecture in about a second; the dynamo exporter took 23 s for the same
   tiny BERT with the same logits. Opset 17, batch and sequence axes dynamic.
3. `--quantize int8`: ONNX Runtime's dynamic quantization (int8 weights per output channel, uint8
   activations scaled per batch at run time), after its recommended pre-processing. Measured on a
   minilm run (benchmarks/results/deploy.md), static QDQ quantization calibrated on the run's
   validation texts lost: with every op quantized accuracy fell to chance, with MatMul/Gemm alone it
   kept accuracy within a point but ran 0.7x as fast as dynamic at 2.5x the size. The activation
   scale is the batch's, so an int8 prediction can change with its batch-mates (fp32 ones cannot).
4. Check the export against the torch model on the run's validation texts, plus a few raw texts that
   cleaning changes: fp32 must give every prediction identical and logits within FP32_TOLERANCE
   (where the method `folds_exactly`; QLoRA with a fixed 16-bit compute dtype is checked as int8 is); int8 must lose
   at most `max_loss` points of validation accuracy (agreement is reported).
5. Fit a temperature on the validation logits of the export (minimum NLL) so its probabilities are
   calibrated; the expected calibration error before and after goes in the manifest.

Everything is written into a temporary directory beside the output, renamed into place only once
every check has passed: a failed export leaves nothing behind.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sendit.artifacts import Predictor
from sendit.calibration import expected_calibration_error, fit_temperature, nll, softmax
from sendit.data import SOURCES, prepare
from sendit.decoders import position_ids_from_mask
from sendit.deploy import (EXPORT_FORMAT_VERSION, INPUT_NAMES, MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE,
                           ExportError, ExportPredictor, padded, sha256)
from sendit.first_token import first_token_only
from sendit.io import atomic_write_json
from sendit.methods import get_method
from sendit.provenance import provenance, version

FORMATS = ("onnx",)
QUANTIZATIONS = ("none", "int8")
OPSET = 17
# Max |logit difference| allowed between torch and ONNX Runtime in fp32: both sum the same products in
# another order, so differences are float32 rounding; measured ~1e-7 on the tiny models and ~1e-6
# on minilm, so 1e-4 fails only an export that computes something else.
FP32_TOLERANCE = 1e-4
DEFAULT_MAX_LOSS = 1.0  # validation accuracy points an int8 export may lose
# Raw texts that cleaning changes (entities, mentions, URLs, hashtags, emoji, case, blanks): the check
# then covers the export's cleaning and tokenising, not only its graph.
PROBES = ["@friend I LOVE this!!! &amp; more at http://example.com #blessed \U0001F600", "", "   ",
          "can't   WAIT\tfor the weekend", "Worst. Service. Ever. www.example.org &lt;3"]


class LogitsOnly(nn.Module):
    """What the ONNX graph computes: logits from ids and mask; for a run that pads left (decoders), position
    ids from the mask as `batching.collate` gives them."""

    def __init__(self, model: nn.Module, left_pad: bool):
        super().__init__()
        self.model, self.left_pad = model, left_pad

    def forward(self, input_ids, attention_mask):
        positions = {"position_ids": position_ids_from_mask(attention_mask)} if self.left_pad else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **positions).logits


def export_run(run_dir: str | Path, out: str | Path, fmt: str = "onnx", quantize: str = "none",
               force: bool = False, max_loss: float = DEFAULT_MAX_LOSS) -> dict:
    """Export `run_dir` into `out` and return the manifest; ExportError (nothing written) when it cannot."""
    run_dir, out = Path(run_dir), Path(out)
    check_options(out, fmt, quantize, force, max_loss)
    predictor = Predictor.from_run(run_dir, as_trained=True)  # folded below, and checked against this
    method = get_method(predictor.cfg.method)
    check_exportable(predictor, method)
    splits = prepare(predictor.cfg.data)
    if splits.val.empty:
        raise ExportError(f"{run_dir}: the run has no validation texts to check the export on")
    texts = splits.val["text"].tolist() + PROBES
    reference = predictor.predict(texts, precision="fp32")  # before folding: the run exactly as saved
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would keep the shipped directory from other users
    try:
        manifest = build_export(tmp, predictor, method, run_dir, texts, reference, splits, quantize, max_loss)
        replace_dir(out, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def check_options(out: Path, fmt: str, quantize: str, force: bool, max_loss: float) -> None:
    """Refuse bad options before any work: an unknown format, an occupied output without --force."""
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: unknown; formats: {', '.join(FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"--quantize {quantize!r}: unknown; one of {', '.join(QUANTIZATIONS)}")
    if not max_loss >= 0:
        raise ExportError(f"--max-loss {max_loss}: accuracy points, 0 or more")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out}: exists and is not empty; pass --force to replace it")


def check_exportable(predictor: Predictor, method) -> None:
    """Refuse, with the reason, what the torch-free predictor cannot reproduce."""
    data, where = predictor.cfg.data, f"{predictor.cfg.method.name} run"
    if SOURCES[data.dataset].targeted and data.target_mode == "pair":
        raise ExportError(f"{where}: sentence-pair inputs (data.target_mode: pair) are not exported; "
                          f"train with data.target_mode: inline")
    if data.truncation != "head":
        raise ExportError(f"{where}: data.truncation {data.truncation!r} is not exported; only 'head'")


def build_export(tmp: Path, predictor: Predictor, method, run_dir: Path, texts: list[str], reference: np.ndarray,
                 splits, quantize: str, max_loss: float) -> dict:
    """Write the model, tokenizer and manifest into `tmp`, checking the export at each step."""
    cfg, tokenizer = predictor.cfg, predictor.tokenizer
    left_pad = tokenizer.padding_side == "left"
    model = method.folded(predictor.model) if method.foldable else predictor.model
    tokenizer.backend_tokenizer.save(str(tmp / TOKENIZER_FILE))
    started = time.perf_counter()
    example = padded(predictor.encode([max(texts, key=len), ""]).input_ids, tokenizer.pad_token_id, left_pad)
    write_onnx(LogitsOnly(model, left_pad).eval(), {k: torch.from_numpy(v) for k, v in example.items()},
               tmp / MODEL_FILE)
    source = SOURCES[cfg.data.dataset]
    manifest = {
        "format": "onnx", "format_version": EXPORT_FORMAT_VERSION, "opset": OPSET, "precision": "fp32",
        "source": {"run": str(run_dir.resolve()), "method": cfg.method.name, "model": cfg.model.name,
                   "dataset": cfg.data.dataset},
        "label_names": list(cfg.data.label_names), "max_length": cfg.model.max_length,
        "clean": dataclasses.asdict(cfg.data.clean) if source.clean else None,
        "pad_token_id": tokenizer.pad_token_id, "left_pad": left_pad, "inputs": list(INPUT_NAMES),
        "batch_size": cfg.train.eval_batch_size, "calibration": {"temperature": 1.0},
        "versions": {**provenance(), **{package: version(package) for package in ("onnx", "onnxruntime")}},
    }
    write_manifest(tmp, manifest)
    exported = ExportPredictor.from_export(tmp).predict(texts)
    labels = splits.val["label"].to_numpy()
    manifest["check"] = {"texts": len(texts), "fp32": check_fp32(reference, exported) if method.folds_exactly
                         else check_accuracy_loss(reference, exported, labels, max_loss, "fp32")}
    if quantize == "int8":
        quantize_int8(tmp / MODEL_FILE)
        manifest |= {"precision": "int8", "quantization": {"kind": "dynamic", "weights": "int8 per channel",
                                                           "activations": "uint8 per batch"}}
        write_manifest(tmp, manifest)
        exported = ExportPredictor.from_export(tmp).predict(texts)
        manifest["check"]["int8"] = check_accuracy_loss(reference, exported, labels, max_loss, "int8")
    manifest["export_seconds"] = round(time.perf_counter() - started, 2)
    manifest["calibration"] = calibrate(ExportPredictor.from_export(tmp), splits)
    manifest["bytes"] = {name: (tmp / name).stat().st_size for name in (MODEL_FILE, TOKENIZER_FILE)}
    write_manifest(tmp, manifest)
    return manifest


def write_onnx(module: nn.Module, example: dict[str, torch.Tensor], path: Path) -> None:
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES} | {"logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad(), first_token_only(module.model):
        warnings.simplefilter("ignore")  # TracerWarnings about Python branches on shapes the checks cover
        try:
            torch.onnx.export(module, tuple(example[name] for name in INPUT_NAMES), str(path), dynamo=False,
                              input_names=list(INPUT_NAMES), output_names=["logits"], dynamic_axes=axes,
                              opset_version=OPSET)
        except (RuntimeError, torch.onnx.errors.OnnxExporterError) as err:
            raise ExportError(f"{type(module.model).__name__}: torch.onnx cannot export it ({err})") from None


def quantize_int8(path: Path) -> None:
    """Replace the fp32 graph at `path` by its dynamically quantized int8 version (ONNX Runtime)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, quantized = path.with_name("prepared.onnx"), path.with_name("int8.onnx")
    logging.disable(logging.INFO)  # the quantizer logs each tensor it leaves in float, on the root logger
    try:
        quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)  # symbolic inference fails here
        quantize_dynamic(prepared, quantized, per_channel=True, weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    prepared.unlink()
    quantized.replace(path)


def check_fp32(reference: np.ndarray, exported: np.ndarray) -> dict:
    difference = float(np.abs(reference - exported).max())
    changed = int((reference.argmax(1) != exported.argmax(1)).sum())
    if changed or difference > FP32_TOLERANCE:
        raise ExportError(f"the ONNX model disagrees with the run: {changed} of {len(reference)} predictions "
                          f"changed, max |logit difference| {difference:.2e} (tolerance {FP32_TOLERANCE:.0e})")
    return {"max_abs_logit_diff": difference, "tolerance": FP32_TOLERANCE, "predictions_identical": True}


def check_accuracy_loss(reference: np.ndarray, exported: np.ndarray, labels: np.ndarray, max_loss: float,
                        precision: str) -> dict:
    """For an export that computes in another precision than its run: agreement with the torch model on
    every checked text; accuracy on the validation texts, at most `max_loss` points lost."""
    before, after = (float((logits[:len(labels)].argmax(1) == labels).mean()) for logits in (reference, exported))
    loss = round(100 * (before - after), 4)
    agreement = float((reference.argmax(1) == exported.argmax(1)).mean())
    if loss > max_loss:
        advice = "export fp32 or allow more" if precision == "int8" else "allow more"
        raise ExportError(f"{precision} loses {loss:.2f} points of validation accuracy ({before:.4f} -> {after:.4f}), "
                          f"more than --max-loss {max_loss}; {advice}")
    return {"val_accuracy_torch": before, f"val_accuracy_{precision}": after, "loss_points": loss,
            "max_loss": max_loss, "agreement": agreement}


def calibrate(exported: ExportPredictor, splits) -> dict:
    """Fit the temperature on validation logits; ECE and NLL before and after, on validation and test."""
    fitted = {}
    for split in ("val", "test"):
        frame = getattr(splits, split)
        if frame.empty:
            continue
        logits, labels = exported.predict(frame["text"].tolist()), frame["label"].to_numpy()
        if split == "val":
            fitted["temperature"] = fit_temperature(logits, labels)
        for when, temperature in (("before", 1.0), ("after", fitted["temperature"])):
            fitted[f"{split}_ece_{when}"] = expected_calibration_error(softmax(logits, temperature), labels)
            fitted[f"{split}_nll_{when}"] = nll(logits, labels, temperature)
        fitted[f"{split}_accuracy"] = float((logits.argmax(1) == labels).mean())
    return fitted


def write_manifest(directory: Path, manifest: dict) -> None:
    """The manifest with the sha256 of every file beside it."""
    files = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    atomic_write_json(directory / MANIFEST_FILE, {**manifest, "sha256": {name: sha256(directory / name)
                                                                          for name in files}})


def replace_dir(out: Path, tmp: Path) -> None:
    """Rename the finished `tmp` to `out`; a directory already there (empty, or --force) is removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{tmp.name}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)
