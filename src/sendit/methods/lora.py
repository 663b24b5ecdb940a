"""LoRA (Hu et al., 2021) through PEFT, with the head trained and saved beside the adapter.

Defaults follow current practice ("LoRA Without Regret", 2025): every linear layer of the encoder
(`all-linear`) and a learning rate about 10x full fine-tuning. The `qv` preset is the seeds'
query/value-only LoRA.
"""
from dataclasses import dataclass, field

from sendit.methods.base import PeftMethod, register_method
from sendit.models import head_module_names

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


def lora_config(model, options: LoraOptions, **extra):
    from peft import LoraConfig, TaskType

    if options.target not in PRESETS:
        raise ValueError(f"lora target '{options.target}' unknown; presets: {', '.join(PRESETS)}")
    head = head_module_names(model)
    targets = options.target_modules or PRESETS[options.target]
    if isinstance(targets, list):  # keep only names this architecture has
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        targets = [t for t in targets if t in present]
    return LoraConfig(task_type=TaskType.SEQ_CLS, r=options.r, lora_alpha=options.alpha,
                      lora_dropout=options.dropout, target_modules=targets,
                      exclude_modules=head if targets == "all-linear" else None,
                      modules_to_save=head, **extra)


@register_method
class Lora(PeftMethod):
    name = "lora"
    summary = "low-rank updates on the linear layers (PEFT) + classification head"
    display_name = "LoRA"
    shares_base = True
    foldable = True
    default_lr = 5e-4
    Options = LoraOptions

    def peft_config(self, model):
        return lora_config(model, self.options)
