"""DoRA (Liu et al., 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation") through PEFT.

Each adapted weight is split into a magnitude vector and a direction; LoRA updates the direction
and the magnitude trains directly (`lora_magnitude_vector`, one value per output feature). The
paper reports gains over LoRA at equal rank, and at half the rank, with LoRA's hyperparameters;
so the options, targets (all linear layers) and learning rate are LoRA's (see `lora.py`). It costs
more per step than LoRA (the weight norm is recomputed every forward) and merges like LoRA.
"""
from sendit.methods.base import register_method
from sendit.methods.lora import Lora, lora_config


@register_method
class Dora(Lora):
    name = "dora"
    summary = "weight-decomposed LoRA: low-rank direction + trained magnitude (PEFT) + classification head"
    display_name = "DoRA"
    frozen_weights_in_bf16 = False  # the weight norm is computed from the float32 base weight

    def peft_config(self, model):
        return lora_config(self, model, use_dora=True)
