"""(IA)^3 (Liu et al., 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
In-Context Learning") through PEFT, with the classification head trained and saved beside it.

Three learned vectors per layer rescale the attention keys, the attention values and the input of
the feed-forward down-projection (the "intermediate activation"); nothing else changes. It trains
the fewest parameters of any method here (a few thousand per layer).

The modules are given per architecture (PEFT's own table also marks BERT's attention
`output.dense` as a feed-forward module, which the paper does not rescale):

| model_type        | keys / values          | feed-forward (input rescaled)          |
|-------------------|------------------------|----------------------------------------|
| bert, roberta     | key, value             | layer.N.output.dense (not attention's) |
| distilbert        | k_lin, v_lin           | ffn.lin2                               |
| opt               | k_proj, v_proj         | fc2                                    |
| gpt2              | c_attn (fused q, k, v) | mlp.c_proj                             |
| gpt_neo           | k_proj, v_proj         | mlp.c_proj                             |

GPT-2 fuses q, k and v into one `c_attn`, so its vector also rescales the queries. Other
architectures need `target_modules` and `feedforward_modules` set explicitly.

Default learning rate 3e-3: the T-Few recipe of the paper (Adafactor, lr 3e-3); PEFT's IA3 guide
uses 8e-3 with AdamW. The vectors start at 1 (identity), so a high rate is needed to move them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sendit.config import ConfigError
from sendit.methods.base import PeftMethod, register_method
from sendit.models import head_module_names, stores_weights_transposed

# model_type -> (target module suffixes, feed-forward suffixes), as regular expressions on the
# end of the module's dotted name. Feed-forward modules are a subset of the targets.
IA3_MODULES = {
    "bert": (["key", "value", r"layer\.\d+\.output\.dense"], [r"layer\.\d+\.output\.dense"]),
    "roberta": (["key", "value", r"layer\.\d+\.output\.dense"], [r"layer\.\d+\.output\.dense"]),
    "distilbert": (["k_lin", "v_lin", r"ffn\.lin2"], [r"ffn\.lin2"]),
    "opt": (["k_proj", "v_proj", "fc2"], ["fc2"]),
    "gpt2": (["c_attn", r"mlp\.c_proj"], [r"mlp\.c_proj"]),
    "gpt_neo": (["k_proj", "v_proj", r"mlp\.c_proj"], [r"mlp\.c_proj"]),
}


@dataclass
class IA3Options:
    # module names (suffixes, as PEFT matches them) to rescale; empty: the table for the model type
    target_modules: list[str] = field(default_factory=list)
    # the subset of target_modules whose input (not output) is rescaled; used only with target_modules
    feedforward_modules: list[str] = field(default_factory=list)


def _suffix_regex(suffixes: list[str]) -> str:
    return rf".*\.(?:{'|'.join(suffixes)})"


def ia3_config(model, options: IA3Options):
    from peft import IA3Config, TaskType

    head = head_module_names(model)
    if options.target_modules:
        targets, feedforward = list(options.target_modules), list(options.feedforward_modules)
        if not set(feedforward) <= set(targets):
            raise ConfigError("methods.ia3.options: feedforward_modules must be a subset of target_modules")
    else:
        model_type = model.config.model_type
        if model_type not in IA3_MODULES:
            raise ConfigError(
                f"ia3 has no module table for model type '{model_type}'; set methods.ia3.options.target_modules "
                f"(key/value/feed-forward module names) and methods.ia3.options.feedforward_modules "
                f"(known types: {', '.join(sorted(IA3_MODULES))})")
        suffixes, ff_suffixes = IA3_MODULES[model_type]
        targets, feedforward = _suffix_regex(suffixes), _suffix_regex(ff_suffixes)
    return IA3Config(task_type=TaskType.SEQ_CLS, target_modules=targets, feedforward_modules=feedforward,
                     fan_in_fan_out=stores_weights_transposed(model), modules_to_save=head)


@register_method
class IA3(PeftMethod):
    name = "ia3"
    summary = "learned rescaling of keys, values and FFN activations (PEFT (IA)^3) + classification head"
    display_name = "IA³"
    shares_base = True
    foldable = True
    # Not PEFT's / T-Few's 3e-3 (thousands of steps): for sendit's one to few epochs, tuned on minilm,
    # 3e-2 beat it by 2.3 test points on Sentiment140 (benchmarks/results/ia3_lr.md) and by 19 validation
    # macro-F1 points on Dong-2014 (tuned.md), where the best lay between 1.3e-2 and 4e-2.
    default_lr = 3e-2
    Options = IA3Options

    def peft_config(self, model):
        return ia3_config(model, self.options)
