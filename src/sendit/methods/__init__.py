"""The method registry: one module per method, each registering itself."""
from sendit.methods.base import METHODS, Method, Phase, get_method, register_method
from sendit.methods import (  # noqa: F401  (registration)
    bitfit, dora, full, head, ia3, lora, prompt_tuning, qlora, two_phase, vera, zero_shot)

__all__ = ["METHODS", "Method", "Phase", "get_method", "register_method"]
