"""Eagle Eye's log records inside vLLM go where vLLM's own go.

vLLM logs through its ``vllm`` logger, with its own handlers and level and no propagation, and leaves the root
logger alone; a package its API server imports for the SageMaker routes (``model_hosting_container_standards``)
then sets the root logger to ERROR. Left to inherit from the root, Eagle Eye's warnings (a NATS outage, a bad
setting) would vanish inside ``vllm serve``. So the plugin logs through vLLM's handlers at vLLM's level, unless the
user configured Eagle Eye's logging, or turned vLLM's off (``VLLM_CONFIGURE_LOGGING=0``).
"""

from __future__ import annotations

import logging

__all__ = ["PACKAGE_LOGGER", "follow_vllm_logging"]

PACKAGE_LOGGER = "eagleeye_otel"


def follow_vllm_logging() -> bool:
    """Send Eagle Eye's records through the ``vllm`` logger's handlers, at its level; whether it did."""
    ours = logging.getLogger(PACKAGE_LOGGER)
    theirs = logging.getLogger("vllm")
    if ours.handlers or ours.level != logging.NOTSET or not theirs.handlers:
        return False
    for handler in theirs.handlers:
        ours.addHandler(handler)
    ours.setLevel(theirs.getEffectiveLevel())
    ours.propagate = False
    return True
