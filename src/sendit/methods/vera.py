"""VeRA (Kopiczko et al., 2024, "VeRA: Vector-based Random Matrix Adaptation") through PEFT.

One pair of frozen random low-rank matrices is shared by every adapted layer; each layer trains only
two scaling vectors (d: rank r, b: the layer's output width). At rank 256 on minilm's linear layers
that is ~10x fewer trainable values than LoRA at rank 8, for a comparable update space. The paper
uses a learning rate about 10x LoRA's (the vectors start at 0.1 and 0): see `sendit methods`.

The shared matrices are saved with the adapter (`save_projection`), so a run reloads identically on
any machine. Targets follow LoRA's presets; updates fold into the weights like LoRA's.
"""
from dataclasses import dataclass, field

from sendit.methods.base import register_method
from sendit.methods.lora import TargetedAdapter
from sendit.models import head_module_names, stores_weights_transposed


@dataclass
class VeraOptions:
    r: int = 256  # rank of the shared random matrices (the paper: 256 for RoBERTa-base)
    d_initial: float = 0.1  # initial value of the per-layer rank vector d
    dropout: float = 0.0  # dropout on the VeRA input
    target: str = "all-linear"  # preset: all-linear | qv
    target_modules: list[str] = field(default_factory=list)  # explicit module names; overrides `target`


@register_method
class Vera(TargetedAdapter):
    name = "vera"
    summary = "shared frozen random low-rank matrices, per-layer trained scaling vectors (PEFT) + classification head"
    display_name = "VeRA"
    shares_base = True
    foldable = True
    default_lr = 2e-2  # measured on minilm: 2e-3 / 5e-3 / 2e-2 -> val F1 0.770 / 0.792 / 0.804 (methods_minilm.md)
    Options = VeraOptions

    def peft_config(self, model):
        from peft import TaskType, VeraConfig

        head, targets = head_module_names(model), self.targets(model)
        return VeraConfig(task_type=TaskType.SEQ_CLS, r=self.options.r, d_initial=self.options.d_initial,
                          vera_dropout=self.options.dropout, target_modules=targets, save_projection=True,
                          fan_in_fan_out=stores_weights_transposed(model), modules_to_save=head)
