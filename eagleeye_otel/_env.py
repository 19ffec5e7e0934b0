"""Reading the environment for the settings classes: plain values, file paths, and secrets from a value or a file.

Only the ``from_env`` constructors of the settings classes use :class:`EnvReader`; everything else takes settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from eagleeye_otel.errors import ConfigError

__all__ = ["MAX_SECRET_FILE_BYTES", "EnvReader", "is_kind"]

MAX_SECRET_FILE_BYTES = 64 * 1024
"""A token or password file larger than this is a mistake (a log, a device); reading stops there."""


class EnvReader:
    """Reads stripped, non-empty values; empty counts as unset, as in the OTel SDK."""

    def __init__(self, raw: Mapping[str, str]) -> None:
        self.raw = raw

    def get(self, name: str) -> str | None:
        """The value of ``name``, stripped; ``None`` when unset or blank."""
        value = self.raw.get(name, "").strip()
        return value or None

    def path(self, name: str) -> Path | None:
        """The file ``name`` points at.

        Raises:
            ConfigError: the file does not exist.
        """
        value = self.get(name)
        if value is None:
            return None
        path = _expand(value)
        if not is_kind(path, Path.is_file):
            raise ConfigError(name, value, "no such file")
        return path

    def secret(self, name: str, file_name: str) -> str | None:
        """A secret given either as ``name`` or, the Kubernetes way, as a file that ``file_name`` points at.

        The file's content is stripped, so the newline ``echo`` or an editor leaves is not part of the secret.
        Error messages name the variable and the path, never the content.

        Raises:
            ConfigError: both variables are set, or the file cannot be read, is empty, is too large or is not text.
        """
        value, file_value = self.get(name), self.get(file_name)
        if file_value is None:
            return value
        if value is not None:
            raise ConfigError(file_name, file_value, f"set either {name} or {file_name}, not both")
        # Errors are raised outside the except blocks: a UnicodeDecodeError carries the bytes, and even a
        # suppressed context would keep them in a logged traceback's reach.
        data, problem = b"", ""
        try:
            with _expand(file_value).open("rb") as file:
                data = file.read(MAX_SECRET_FILE_BYTES + 1)
        except (OSError, ValueError) as error:  # ValueError: a NUL in the path
            problem = f"cannot read it: {getattr(error, 'strerror', None) or type(error).__name__}"
        if problem:
            raise ConfigError(file_name, file_value, problem)
        if len(data) > MAX_SECRET_FILE_BYTES:
            raise ConfigError(file_name, file_value, f"larger than {MAX_SECRET_FILE_BYTES} bytes: not a secret file")
        secret = data.decode("utf-8", errors="replace").strip()
        if "\ufffd" in secret:
            raise ConfigError(file_name, file_value, "not UTF-8 text")
        if not secret:
            raise ConfigError(file_name, file_value, "the file is empty")
        return secret


def is_kind(path: Path, check: Callable[[Path], bool]) -> bool:
    """``check(path)`` (``Path.is_file``, ``Path.is_dir``), false where the path cannot even be looked up.

    ``Path.is_file`` raises on a name too long for the filesystem or a NUL in it; a setting holding one is simply
    not a file.
    """
    try:
        return check(path)
    except (OSError, ValueError):
        return False


def _expand(value: str) -> Path:
    """``~`` and ``~user`` expanded where they can be; ``~nobody-here`` stays as written (and is then not found)."""
    try:
        return Path(value).expanduser()
    except RuntimeError:
        return Path(value)
