"""Full fine-tuning: every weight trains."""
from sendit.methods.base import Method, freeze_all_but, register_method


@register_method
class Full(Method):
    name = "full"
    summary = "every parameter trains"
    display_name = "full fine-tuning"
    default_lr = 5e-5

    def apply(self, model):
        return freeze_all_but(model, lambda name: True)
