"""Library chatter (load reports, progress bars, a bitsandbytes notice) silenced in one place, for the
CLI and for the study's worker processes alike."""
from __future__ import annotations

import logging
import os
import sys
import warnings

LIBRARIES = ("transformers", "peft", "accelerate", "bitsandbytes", "httpx")


def quiet_libraries() -> None:
    """Warnings off, the libraries' loggers at ERROR, transformers' progress bars off.

    transformers is told through the environment it reads when first imported, so quieting it does not
    import it (seconds that `sendit predict` on an export, which never uses it, would pay).
    """
    warnings.filterwarnings("ignore")
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "transformers" in sys.modules:  # imported already: it has read the environment
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
