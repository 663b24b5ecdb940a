"""LoRA (Hu et al., 2021) through PEFT, with the head trained and saved beside the adapter.

Defaults follow current practice ("LoRA Without Regret", 2025): every linear layer of the encoder
(`all-linear`) and a learning rate about 10x full fine-tuning. The `qv` preset is the seeds'
query/value-only LoRA.
"""
from dataclasses import dataclass, field

from sendit.config import ConfigError
from sendit.methods.base import PeftMethod, register_method
from sendit.models import head_module_names, stores_weights_transposed

# Query/value projection names across the architectures sendit supports.
QV_MODULES = ["query", "value", "q_lin", "v_lin", "q_proj", "v_proj", "c_attn"]
PRESETS = {"all-linear": "all-linear", "qv": QV_MODULES}


@dataclass
class LoraOptions:
    r: int = 8  # rank of the update
    alpha: int = 16  # scaling numerator: the update is scaled by alpha / r
    dropout: float = 0.05  # dropout on the LoRA input
    target: str = "all-linear"  # preset: all-linear | qv
    target_modules: list[str] = field(default_factory=list)  # explicit module names; overrides `target`


class TargetedAdapter(PeftMethod):
    """A PEFT adapter on named linear layers, chosen by `options.target` (a preset) or `target_modules`."""

    def validate(self) -> None:
        if self.options.target not in PRESETS:
            raise ConfigError(f"methods.{self.config.name}.options.target={self.options.target!r}: unknown preset; "
                              f"presets: {', '.join(PRESETS)} (or list module names in target_modules)")

    def targets(self, model) -> str | list[str]:
        """The preset's module names this architecture has ("all-linear" stays a keyword for PEFT)."""
        targets = self.options.target_modules or PRESETS[self.options.target]
        if isinstance(targets, list):
            present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
            targets = [t for t in targets if t in present]
        return targets


def lora_config(method: TargetedAdapter, model, **extra):
    from peft import LoraConfig, TaskType

    head, targets, options = head_module_names(model), method.targets(model), method.options
    return LoraConfig(task_type=TaskType.SEQ_CLS, r=options.r, lora_alpha=options.alpha,
                      lora_dropout=options.dropout, target_modules=targets,
                      exclude_modules=head if targets == "all-linear" else None,
                      fan_in_fan_out=stores_weights_transposed(model), modules_to_save=head, **extra)


@register_method
class Lora(TargetedAdapter):
    name = "lora"
    summary = "low-rank updates on the linear layers (PEFT) + classification head"
    display_name = "LoRA"
    shares_base = True
    foldable = True
    default_lr = 5e-4
    Options = LoraOptions

    def peft_config(self, model):
        return lora_config(self, model)
