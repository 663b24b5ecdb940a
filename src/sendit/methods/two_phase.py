"""Two phases (seed study 004): full fine-tuning for `full_epochs`, then the head alone for
`head_epochs` at a higher learning rate.

The second phase is a `head_features` phase: the encoder, frozen after phase one, runs once over
the training set and the head trains on the cached pooled features, so 20 head epochs cost about
one encoder pass. Every weight is saved (phase one trains them all).

`train.epochs` is not used: the two phases set their own epochs. The method's `lr` (default 5e-5,
as `full`) is phase one's; `head_lr` (default 2e-3, as `head`) is phase two's. `train.max_steps`
caps each phase separately.
"""
from dataclasses import dataclass

from sendit.methods.base import Method, Phase, freeze_all_but, register_method


@dataclass
class TwoPhaseOptions:
    full_epochs: float = 1.0  # phase one: every weight trains, at the method's lr
    head_epochs: float = 20.0  # phase two: the head alone on cached features
    head_lr: float = 2e-3  # phase two's learning rate


@register_method
class TwoPhase(Method):
    name = "two_phase"
    summary = "full fine-tuning, then the head alone on cached features at a higher lr (ignores train.epochs)"
    display_name = "two-phase"
    default_lr = 5e-5
    Options = TwoPhaseOptions

    def apply(self, model):
        return freeze_all_but(model, lambda name: True)

    def phases(self, train):
        phases = [Phase("end_to_end", self.options.full_epochs, self.lr, name="full"),
                  Phase("head_features", self.options.head_epochs, self.options.head_lr, name="head")]
        return [phase for phase in phases if phase.epochs > 0]  # 0 epochs skips a phase
