"""Library chatter (load reports, progress bars, a bitsandbytes notice) silenced in one place, for the
CLI and for the study's worker processes alike."""
from __future__ import annotations

import logging
import warnings

LIBRARIES = ("transformers", "peft", "accelerate", "bitsandbytes", "httpx")


def quiet_libraries() -> None:
    """Warnings off, the libraries' loggers at ERROR, transformers' progress bars off."""
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore")
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
