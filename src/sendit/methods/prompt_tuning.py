"""Prompt tuning (Lester et al., 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning")
through PEFT: `num_virtual_tokens` learned input embeddings are prepended to every example; the
model stays frozen; the classification head trains and is saved beside the prompt.

Defaults: 20 virtual tokens (Lester et al. found 20 about as good as 100 once the model is large);
random init (options: `vocab`, embeddings of random vocabulary tokens, which Lester et al. found
better than random; `text`, the embeddings of `init_text`). Learning rate 3e-2 with AdamW: Lester
et al. used 0.3 with Adafactor, which is far too high for AdamW.

Known to struggle on small classifiers: the paper's own result is that prompt tuning only matches
full fine-tuning at ~10B parameters; on MiniLM-sized models expect it well below LoRA.

Decoders: PEFT feeds the prompt as `inputs_embeds`, so transformers' decoder classifiers cannot
see the pad tokens and pool the *last position* of the row (a pad under right padding), and PEFT
drops `position_ids`. Two hooks fix both: the last real token (from the attention mask) is pooled,
and position ids follow the mask, so logits do not depend on padding side or batch-mates.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sendit.config import ConfigError
from sendit.decoders import position_ids_from_mask
from sendit.methods.base import PeftMethod, register_method
from sendit.models import embedded_minilm_path, head_module_names

INITS = {"random": "RANDOM", "vocab": "SAMPLE_VOCAB", "text": "TEXT"}
# Decoders whose position ids ignore the attention mask (OPT derives them from the mask itself).
ARANGE_POSITION_TYPES = {"gpt2", "gpt_neo"}


@dataclass
class PromptTuningOptions:
    num_virtual_tokens: int = 20  # learned prompt length (Lester et al.: 20)
    init: str = "random"  # random | vocab (random vocabulary embeddings) | text (embeddings of init_text)
    init_text: str = "Classify the sentiment of this tweet:"  # used by init=text (repeated/cut to length)
    tokenizer: str | None = None  # init=text: tokenizer path; None: the model's own (MiniLM for tiny-*)


def prompt_tuning_config(model, options: PromptTuningOptions):
    from peft import PromptTuningConfig, TaskType

    if options.init not in INITS:
        raise ConfigError(f"methods.prompt_tuning.options.init '{options.init}' unknown; use one of {', '.join(INITS)}")
    if options.num_virtual_tokens < 1:
        raise ConfigError("methods.prompt_tuning.options.num_virtual_tokens must be at least 1")
    text = {}
    if options.init == "text":
        tokenizer = options.tokenizer or model.config.name_or_path or _tiny_model_tokenizer()
        text = dict(prompt_tuning_init_text=options.init_text, tokenizer_name_or_path=str(tokenizer))
    return PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=options.num_virtual_tokens,
                              token_dim=model.get_input_embeddings().embedding_dim,
                              num_layers=model.config.num_hidden_layers,  # PEFT insists; prompt tuning ignores them
                              num_attention_heads=model.config.num_attention_heads,
                              prompt_tuning_init=INITS[options.init], modules_to_save=head_module_names(model),
                              **text)


def _tiny_model_tokenizer() -> str:
    """Tiny test models use the MiniLM tokenizer."""
    return str(embedded_minilm_path())


@register_method
class PromptTuning(PeftMethod):
    name = "prompt_tuning"
    summary = "learned soft-prompt embeddings prepended to the input (PEFT) + classification head"
    display_name = "prompt tuning"
    shares_base = True
    default_lr = 3e-2
    Options = PromptTuningOptions

    def peft_config(self, model):
        return prompt_tuning_config(model, self.options)

    def apply(self, model):
        head = head_module_names(model)
        peft_model = super().apply(model)
        if "score" in head:  # decoder classifiers pool the last token
            pool_last_real_token(peft_model.base_model, mask_positions=model.config.model_type in ARANGE_POSITION_TYPES)
        return peft_model


def pool_last_real_token(classifier: torch.nn.Module, mask_positions: bool) -> None:
    """Make a decoder classifier fed with `inputs_embeds` pool each row's last real token.

    A pre-hook on the classifier reads the attention mask (prompt included) and, if asked, adds
    mask-derived position ids; a hook on `score` then moves each row's last real position to the
    last column, the one transformers pools when it has no input ids.
    """
    state = {}

    def before(_module, args, kwargs):
        mask = kwargs.get("attention_mask")
        state["last"] = None
        if mask is not None:
            positions = torch.arange(mask.shape[1], device=mask.device)
            state["last"] = (positions * (mask != 0)).argmax(-1)
            if mask_positions and kwargs.get("position_ids") is None:
                kwargs["position_ids"] = position_ids_from_mask(mask)
        return args, kwargs

    def pool(_module, _args, logits):
        last = state.get("last")
        if last is None or logits.dim() != 3:
            return logits
        pooled = logits.clone()
        pooled[:, -1] = logits[torch.arange(logits.shape[0], device=logits.device), last]
        return pooled

    classifier.register_forward_pre_hook(before, with_kwargs=True)
    classifier.score.register_forward_hook(pool)
