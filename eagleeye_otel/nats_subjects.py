"""NATS subject rules shared by every setting that names a subject."""

from __future__ import annotations

import re

from eagleeye_otel.errors import ConfigError

__all__ = ["check_subject", "subject_token"]

_SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9_\-]")


def subject_token(name: str) -> str:
    """``name`` as one NATS subject token: every character but letters, digits, ``-`` and ``_`` becomes ``_``.

    Node names often hold dots (``ip-10-0-0-7.ec2.internal``), which would split ``<prefix>.<node>`` into several
    tokens and escape a ``<prefix>.*`` subscription.
    """
    return _NOT_TOKEN.sub("_", name) or "_"


def check_subject(name: str, value: str, *, wildcards: bool = False) -> None:
    """Raise :class:`ConfigError` naming ``name`` unless ``value`` is a subject (``wildcards``: a subscription's)."""
    tokens = value.split(".")
    for index, token in enumerate(tokens):
        if _SUBJECT_TOKEN.match(token) or (wildcards and (token == "*" or (token == ">" and index == len(tokens) - 1))):
            continue
        allowed = "; '*' and a final '>' are wildcards" if wildcards else ""
        raise ConfigError(name, value, f"a subject is dot-separated tokens of letters, digits, '-' and '_'{allowed}")
