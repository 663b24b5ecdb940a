"""QLoRA (Dettmers et al., 2023): LoRA over a base whose linear weights are frozen in 4-bit NF4.

The base's linear layers (every `nn.Linear`, and GPT-2's `Conv1D`, transposed) are quantised in
place to bitsandbytes `Linear4bit`: NF4 blocks of 64 with double quantisation of the block scales -
the paper's recipe, written as the `BitsAndBytesConfig` that transformers would take at load time.
The paper computes in bfloat16; sendit's default `compute_dtype: auto` computes in the run's own
precision (`train.precision` / `eval_precision`, which sendit measures): the 4-bit weights are
dequantised to float32 and a bf16 run's autocast multiplies them in bf16. What is stored (NF4) is
the method; what it multiplies in is the hardware's. On a CPU without bf16 units a fixed bfloat16
costs about 9x the training time and 5x the inference time of float32 (`qlora_compute.md`).

The classification head is never quantised (quantising it is what causes "FP4 quantization state
not initialized"); it trains in fp32 and is saved beside the LoRA weights.
Quantisation is deterministic, so a saved run reloads into the same quantised base.

Then PEFT's `prepare_model_for_kbit_training`: it freezes the base and upcasts fp16/bf16
non-quantised weights to fp32 (a no-op here: sendit loads fp32), and by default would turn on
gradient checkpointing. On CPU that costs a second forward per step for activation memory that
small models barely use, so it is off unless `gradient_checkpointing: true`. Measured on MiniLM
(batch 32 x 64 tokens, one thread, AVX512-BF16 CPU, 4-bit layers in bf16): LoRA 1.8 s/step, QLoRA
1.4 s/step, QLoRA with gradient checkpointing 2.25 s/step.

Memory: only the linear weights shrink (MiniLM: 41 MiB fp32 -> 5.3 MiB with the quantisation
state); the word embeddings (45 MiB) stay fp32, as in the paper. The full-precision rest is copied
out of the checkpoint's memory map, or the mapped fp32 file would stay resident: process RSS
with the model loaded and run once, 542 MB fp32 vs 512 MB quantised (about 420 MB is Python,
torch and the libraries).

bitsandbytes 0.50 on a CPU with AVX512-BF16 repacks a 4-bit weight in place the first time it runs
in eval mode without gradients; after that a training step fails ("a view of a leaf Variable ...
in-place operation"). Training validates between steps, so the repacking is switched off: eval
and training run the same kernel.

Export (`sendit export`) dequantises then folds: each 4-bit layer becomes a float32 `nn.Linear`
holding exactly the weights it stores, LoRA's update added (PEFT's own merge would re-quantise the
sum to 4 bits, rounding most of the update away). The export computes in float32, as the run does
in float32 or with `auto` (the export's reference is the run in fp32); with a fixed 16-bit
`compute_dtype` the two differ by its rounding: the export is then checked like an int8 one
(validation accuracy lost), not for identical predictions.

LoRA options and defaults are LoRA's (all linear layers, r=8, alpha=16; see `lora.py`); the paper
used r=64, alpha=16, lr 2e-4 on 7B+ models; on small models sendit keeps LoRA's 5e-4.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sendit.config import ConfigError
from sendit.methods.base import register_method
from sendit.methods.lora import Lora, LoraOptions
from sendit.models import head_module_names

# auto: dequantise to float32 and let the run's precision (autocast) choose the multiply's dtype.
DTYPES = {"auto": torch.float32, "bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


@dataclass
class QLoraOptions(LoraOptions):
    quant_type: str = "nf4"  # nf4 (the paper's NormalFloat) | fp4
    double_quant: bool = True  # quantise the per-block scales too (~0.4 bit/weight saved)
    compute_dtype: str = "auto"  # dtype of the 4-bit matmuls: auto (the run's precision) | bfloat16 | float32 | float16
    gradient_checkpointing: bool = False  # recompute activations in backward (slower; less memory)


def bnb_config(options: QLoraOptions, skip: list[str]):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=options.quant_type,
                              bnb_4bit_use_double_quant=options.double_quant,
                              bnb_4bit_compute_dtype=DTYPES[options.compute_dtype], llm_int8_skip_modules=skip)


def quantize_4bit(model: nn.Module, config) -> nn.Module:
    """Replace the model's linear layers, except `config.llm_int8_skip_modules`, by 4-bit ones, in place.

    What `from_pretrained(..., quantization_config=config, device_map="cpu")` would give, for a model
    already in memory (tiny test models are built from a config and cannot be re-loaded).
    """
    import bitsandbytes as bnb
    from transformers.pytorch_utils import Conv1D

    skip = set(config.llm_int8_skip_modules or [])
    replaced = 0
    for name, module in list(model.named_modules()):
        if not (type(module) is nn.Linear or isinstance(module, Conv1D)) or skip & set(name.split(".")):
            continue
        weight = module.weight.detach()
        if isinstance(module, Conv1D):  # Conv1D stores (in, out): y = x @ W + b
            weight = weight.t()
        out_features, in_features = weight.shape
        new = bnb.nn.Linear4bit(in_features, out_features, bias=module.bias is not None,
                                compute_dtype=config.bnb_4bit_compute_dtype,
                                compress_statistics=config.bnb_4bit_use_double_quant,
                                quant_type=config.bnb_4bit_quant_type, device="meta")
        new.weight = bnb.nn.Params4bit(weight.contiguous().cpu(), requires_grad=False,
                                       compress_statistics=config.bnb_4bit_use_double_quant,
                                       quant_type=config.bnb_4bit_quant_type, module=new)._quantize("cpu")
        if module.bias is not None:
            new.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=False)
        new.support_avx512bf16_for_cpu = False  # no in-place eval repacking (see the module docstring)
        new.train(module.training)
        model.set_submodule(name, new)
        replaced += 1
    if not replaced:
        raise ConfigError(f"qlora: {type(model).__name__} has no linear layers to quantise")
    _own_memory(model, bnb.nn.Params4bit)
    model.is_loaded_in_4bit = True  # what PEFT checks to wrap Linear4bit layers with 4-bit LoRA
    model.quantization_method = "bitsandbytes"
    return model


def _own_memory(model: nn.Module, keep: type) -> None:
    """Copy the weights that stay in full precision out of the checkpoint's memory map.

    transformers memory-maps safetensors checkpoints: the embeddings and layer norms still point
    into the mapping, which keeps the whole fp32 file - quantised layers included - resident.
    """
    with torch.no_grad():
        for param in model.parameters():
            if not isinstance(param, keep):
                param.data = param.data.clone()
        for module in model.modules():
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    module._buffers[name] = buffer.clone()


def dequantize_4bit(model: nn.Module) -> nn.Module:
    """Replace, in place, every 4-bit layer by a float32 `nn.Linear` of its dequantised weights, with the
    LoRA update folded in where LoRA wraps it (the head, never quantised, is left to PEFT's unload)."""
    import bitsandbytes as bnb
    from peft.tuners.lora import LoraLayer

    def plain(layer, update) -> nn.Linear:
        weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
        linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        linear.weight.copy_(weight + update)
        if layer.bias is not None:
            linear.bias.copy_(layer.bias)
        return linear

    with torch.no_grad():
        for name, module in list(model.named_modules()):
            if isinstance(module, LoraLayer) and isinstance(module.get_base_layer(), bnb.nn.Linear4bit):
                update = sum(module.get_delta_weight(adapter) for adapter in module.active_adapters)
                model.set_submodule(name, plain(module.get_base_layer(), update))
            elif isinstance(module, bnb.nn.Linear4bit) and not name.endswith(".base_layer"):  # not LoRA-wrapped
                model.set_submodule(name, plain(module, 0))
    return model


@register_method
class QLora(Lora):
    name = "qlora"
    summary = "LoRA over 4-bit NF4 linear layers (bitsandbytes, double quant) + classification head"
    display_name = "QLoRA"
    shares_base = False  # its base is quantised per run
    needs_bitsandbytes = True
    Options = QLoraOptions

    def validate(self) -> None:
        super().validate()
        if self.options.quant_type not in ("nf4", "fp4"):
            raise ConfigError(f"methods.qlora.options.quant_type '{self.options.quant_type}' unknown; use nf4 or fp4")
        if self.options.compute_dtype not in DTYPES:
            raise ConfigError(f"methods.qlora.options.compute_dtype '{self.options.compute_dtype}' unknown; "
                              f"use one of {', '.join(DTYPES)}")

    @property
    def folds_exactly(self) -> bool:
        return self.options.compute_dtype in ("auto", "float32")  # else the 4-bit layers compute in 16 bits

    def folded(self, model):
        return super().folded(dequantize_4bit(model))

    def for_inference(self, model):
        return model  # folding would dequantise the base: 4x the memory QLoRA is chosen to save

    def apply(self, model):
        from peft import prepare_model_for_kbit_training

        quantize_4bit(model, bnb_config(self.options, head_module_names(model)))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=self.options.gradient_checkpointing)
        return super().apply(model)
