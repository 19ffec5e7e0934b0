"""The knowledge base: rules as YAML data, the shipped defaults merged with the user's files.

First version: the public signatures; the loader lands in the next commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KnowledgeBase", "load_knowledge_base"]


@dataclass(frozen=True)
class KnowledgeBase:
    """Validated rules, ready to evaluate."""

    files: tuple[Path, ...] = ()


def load_knowledge_base(extra: Sequence[Path] = ()) -> KnowledgeBase:
    """The shipped rules with ``extra`` files merged over them, in order.

    Raises:
        ConfigError: a file cannot be read or is invalid; names the file and the key.
    """
    raise NotImplementedError
