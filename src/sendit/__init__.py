"""sendit: adapt pretrained transformers to sentiment classification, and measure which method to pick."""
from sendit.host import bound_primitive_cache

__version__ = "0.1.0"

bound_primitive_cache()  # before torch builds any oneDNN primitive: oneDNN reads the capacity once, at its first
