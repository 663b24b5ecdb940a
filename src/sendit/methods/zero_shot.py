"""The pre-PEFT baseline of the seeds: the pretrained encoder with its untrained, random head."""
from sendit.methods.base import Method, freeze_all_but, register_method


@register_method
class ZeroShot(Method):
    name = "zero_shot"
    summary = "no training: evaluates the randomly initialised head (expect chance accuracy)"
    display_name = "zero-shot"
    baseline = True
    default_lr = None

    def apply(self, model):
        return freeze_all_but(model, lambda name: False)

    def phases(self, train):
        return []
