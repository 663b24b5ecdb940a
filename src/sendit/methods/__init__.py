"""The method registry: one module per method, each registering itself."""
from sendit.methods.base import METHODS, Method, Phase, get_method, register_method
from sendit.methods import bitfit, full, head, lora, zero_shot  # noqa: F401  (registration)

__all__ = ["METHODS", "Method", "Phase", "get_method", "register_method"]
