"""Library messages an export prints that look like errors and are not: they are dropped, by
exact text, so a newcomer's first export shows our progress and result; any other warning or
error still shows."""

from __future__ import annotations

import logging
import re
import warnings

# Each was read and judged harmless for our exports (transformers 4.57, optimum 2.1).
KNOWN_HARMLESS = (
    # sentence-transformers' saved configs still say torch_dtype; transformers renamed it.
    "`torch_dtype` is deprecated! Use `dtype` instead!",
    # optimum's optional check for tied weights; our graphs are saved whole without it.
    "Weight deduplication check in the ONNX export requires accelerate.",
)
LIBRARY_LOGGERS = ("transformers", "optimum", "sentence_transformers", "nncf")


class DropKnownHarmless(logging.Filter):
    """Drops the records whose message starts with a known harmless text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(text) for text in KNOWN_HARMLESS)


_FILTER = DropKnownHarmless()


def quiet_known_library_noise() -> None:
    """Attach the filter where these messages are emitted and printed (idempotent). Call it
    after the libraries are imported: each adds its own handler when first imported."""
    from optimum.utils import logging as optimum_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.get_logger("transformers")
    optimum_logging.get_logger("optimum")
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
    for text in KNOWN_HARMLESS:
        warnings.filterwarnings("ignore", message=re.escape(text))
