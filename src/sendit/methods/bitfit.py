"""BitFit (Ben Zaken et al., 2022): only the bias terms train, plus the classification head."""
from sendit.methods.base import Method, freeze_all_but, keep_head, register_method


@register_method
class BitFit(Method):
    name = "bitfit"
    summary = "bias terms + classification head"
    display_name = "BitFit"
    default_lr = 2e-3

    def apply(self, model):
        is_head = keep_head(model)
        return freeze_all_but(model, lambda name: name.endswith(".bias") or is_head(name))
