"""Secrets out of every view of the configuration (docs/SECURITY.md).

The same values the logs mask (``masking.Masker``: env_file values, ``secret_env``
values, the variables channel URLs use) plus the web tokens, and inside any URL the
password of its userinfo and the values of query parameters whose names look secret.
``show-config``, ``get-setting``, ``validate``, ``list --json``, the dashboard's
pages and the API all pass what they show through ``redact``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from .config import Config
from .masking import Masker

MASK = "***"
SECRET_NAME = re.compile(
    r"token|key|secret|passw|pwd|signature|sig$|auth|credential|session", re.IGNORECASE
)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)(?P<pw>[^\s/@]+)(?=@)")
_QUERY = re.compile(r"(?P<head>[?&;](?P<name>[^=&;#\s]+)=)(?P<value>[^&;#\s]*)")


def mask_urls(text: str) -> str:
    """``text`` with URL passwords and secret-looking query parameters replaced by ***."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: m.group("head") + MASK, text)
    if "://" in text or "?" in text:
        text = _QUERY.sub(_query_value, text)
    return text


def _query_value(m: re.Match) -> str:
    name = m.group("name").lstrip("-+:")
    if m.group("value") and SECRET_NAME.search(name):
        return m.group("head") + MASK
    return m.group(0)


def web_token_values(config: Config, environ: Any = os.environ) -> list[str]:
    """Every web token's value that can be found (for masking; unknown ones are skipped)."""
    from .tokens import token_values

    return token_values(config, environ)


def config_masker(config: Config, environ: Any = os.environ) -> Masker:
    """The union of every secret value of ``config``, web tokens included."""
    from .notify.channels import secrets

    keys = [c.key for c in config.checks.values() if c.key]
    return Masker([*secrets(config), *web_token_values(config, environ), *keys])


def redact(value: Any, masker: Masker) -> Any:
    """``value`` (JSON-like data or text) with every secret replaced by ``***``."""
    if isinstance(value, str):
        return mask_urls(masker.text(value) or "")
    if isinstance(value, dict):
        return {k: _redact_item(k, v, masker) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, masker) for v in value]
    return value


def _redact_item(key: Any, value: Any, masker: Masker) -> Any:
    if key == "token" and isinstance(value, str) and value:
        from .tokens import VAR

        return value if VAR.fullmatch(value.strip()) else MASK
    return redact(value, masker)
