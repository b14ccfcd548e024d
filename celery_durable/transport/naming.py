"""Names derived from a broker URL: its spill directory, and a loggable form.

A broker's stores live in ``spill_dir/<broker_dir_name(url)>``; the name is
readable, filesystem-safe and free of credentials, with a hash of the full URL
so two brokers never share a directory.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["broker_dir_name", "safe_url"]


def broker_dir_name(inner_url: str) -> str:
    """A readable, filesystem-safe directory name for one broker (no credentials)."""
    from kombu.utils.url import _parse_url

    parts = _parse_url(inner_url)
    readable = f"{parts.scheme}-{parts.hostname or 'localhost'}-{parts.port or 'default'}"
    readable += f"-{(parts.path or '0').strip('/') or '0'}"
    digest = hashlib.sha1(inner_url.encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", readable) + "-" + digest


def safe_url(url: str) -> str:
    """``url`` with its credentials masked, for logs and status output."""
    return re.sub(r"//[^@/]*@", "//***@", url)
