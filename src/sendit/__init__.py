"""sendit: adapt pretrained transformers to sentiment classification, and measure which method to pick."""
__version__ = "0.1.0"
