"""Head-only training (linear probing): the encoder stays frozen and runs once.

Pooled features are computed once for the whole training set, then the head trains on them for
as many epochs as asked, so 20 epochs cost about as much as one.
"""
from sendit.methods.base import Method, Phase, freeze_all_but, keep_head, register_method


@register_method
class Head(Method):
    name = "head"
    summary = "classification head only, trained on pooled features cached once"
    display_name = "head only"
    default_lr = 2e-3

    def apply(self, model):
        return freeze_all_but(model, keep_head(model))

    def phases(self, train):
        return [Phase("head_features", train.epochs, self.lr, name="head")]
