"""An exported run, labelling texts without torch: ONNX Runtime over the run's own tokenizer.

`sendit export` (sendit.export) writes a directory holding
- `model.onnx`: token ids + attention mask -> logits, the adapter folded in, the head included
  (fp32, or int8 weights when quantized);
- `tokenizer.json`: the run's fast tokenizer, read here by the `tokenizers` library, not transformers;
- `manifest.json`: format and version, the source run, label names, cleaning, max_length, padding,
  the fitted temperature, the checks the export passed, library versions and each file's sha256.

Only numpy, onnxruntime, tokenizers and sendit's light modules are imported here, so a process
that serves or predicts from an export starts in a fraction of a second and never loads torch.
`ExportPredictor` has the interface of the torch `artifacts.Predictor`: callers hold either one.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sendit.config import CleanConfig, build
from sendit.textclean import clean_text
from sendit.errors import InputError

EXPORT_FORMAT_VERSION = 1  # raise it when a file changes in a way an older sendit cannot read
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
INPUT_NAMES = ("input_ids", "attention_mask")


class ExportError(InputError):
    """An export that cannot be written or read; the message names the file or option."""


def is_export(path: str | Path) -> bool:
    """A directory `sendit export` wrote (it has a manifest), as opposed to a run directory."""
    return (Path(path) / MANIFEST_FILE).is_file()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(directory: Path) -> dict:
    """The manifest, checked: readable, a format this sendit reads, every listed file present and unchanged."""
    path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{directory}: not a sendit export (no {MANIFEST_FILE})") from None
    except ValueError as err:
        raise ExportError(f"{path}: not valid JSON ({err})") from None
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > EXPORT_FORMAT_VERSION:
        raise ExportError(f"{path}: export format {version!r}; this sendit reads up to {EXPORT_FORMAT_VERSION}")
    for name, expected in manifest.get("sha256", {}).items():
        if not (directory / name).is_file():
            raise ExportError(f"{directory / name}: missing (listed in {MANIFEST_FILE})")
        if sha256(directory / name) != expected:
            raise ExportError(f"{directory / name}: sha256 differs from {MANIFEST_FILE}: the file was changed")
    return manifest


def padded(rows: list[np.ndarray], pad_id: int, left_pad: bool) -> dict[str, np.ndarray]:
    """The model's inputs for `rows` of token ids, padded to the longest (as `batching.collate` pads for torch)."""
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for j, row in enumerate(rows):
        span = slice(width - len(row), width) if left_pad else slice(0, len(row))
        ids[j, span], mask[j, span] = row, 1
    return {"input_ids": ids, "attention_mask": mask}


@dataclass
class ExportPredictor:
    """An export ready to label texts: cleaned and tokenised as the run's training data was, batched by
    length, logits divided by the fitted temperature so that their softmax is calibrated."""

    session: object  # onnxruntime.InferenceSession
    tokenizer: object  # tokenizers.Tokenizer, truncating at the run's max_length
    manifest: dict
    directory: Path

    @classmethod
    def from_export(cls, directory: str | Path, threads: int | None = None) -> "ExportPredictor":
        """Load an export; `threads`: ONNX Runtime's intra-op threads (None: its default, the physical cores)."""
        import onnxruntime
        from tokenizers import Tokenizer

        directory = Path(directory)
        manifest = read_manifest(directory)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT warns about initializers it folds
        if threads:
            options.intra_op_num_threads = threads
        try:
            session = onnxruntime.InferenceSession(str(directory / MODEL_FILE), options,
                                                   providers=["CPUExecutionProvider"])
            tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        except Exception as err:  # ORT and tokenizers raise their own types for unreadable files
            raise ExportError(f"{directory}: cannot load the export ({err})") from None
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=manifest["max_length"])
        return cls(session, tokenizer, manifest, directory)

    @property
    def label_names(self) -> list[str]:
        return self.manifest["label_names"]

    @property
    def temperature(self) -> float:
        return self.manifest["calibration"]["temperature"]

    def clean(self, texts: list[str]) -> list[str]:
        """New texts cleaned exactly as the run's training data was (`data.clean`; none: stripped only)."""
        settings = self.manifest["clean"]
        if settings is None:
            return [text.strip() for text in texts]
        cfg = build(CleanConfig, settings, f"{self.directory / MANIFEST_FILE}: clean")
        return [clean_text(text, cfg) for text in texts]

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids, special tokens included, truncated at the run's max_length; not padded."""
        return [np.asarray(e.ids, dtype=np.int64) for e in self.tokenizer.encode_batch(texts)] if texts else []

    def logits(self, encoded: list[np.ndarray], batch_size: int | None = None, precision: str | None = None,
               on_batch=None) -> tuple[np.ndarray, float]:
        """(the model's own logits, no temperature, one row per text; seconds the forward passes took),
        batched in length order, as `Predictor.logits`. `precision` is fixed at export: None or the
        export's own ("fp32" / "int8")."""
        if precision not in (None, self.manifest["precision"]):
            raise ExportError(f"{self.directory}: exported in {self.manifest['precision']}; cannot run in {precision}")
        batch_size = batch_size or self.manifest["batch_size"]
        order = np.argsort([len(ids) for ids in encoded], kind="stable")
        logits = np.empty((len(encoded), len(self.label_names)), dtype=np.float32)
        seconds = 0.0
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            inputs = padded([encoded[i] for i in index], self.manifest["pad_token_id"], self.manifest["left_pad"])
            started = time.perf_counter()
            logits[index] = self.session.run(["logits"], inputs)[0]
            seconds += time.perf_counter() - started
            if on_batch:
                on_batch(len(index))
        return logits, seconds

    def predict(self, texts: list[str], batch_size: int | None = None, precision: str | None = None,
                on_batch=None) -> np.ndarray:
        """Calibrated logits of new texts (divided by the temperature): their softmax is the probability."""
        return self.logits(self.encode(self.clean(texts)), batch_size, precision, on_batch)[0] / self.temperature
