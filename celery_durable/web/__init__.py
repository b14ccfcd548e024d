"""The dead-letter console (``celery durable web``; extra ``celery-durable[web]``).

One module per concern: ``app`` (routes and pages), ``security`` (bind check,
authentication, CSRF, headers), ``jobs`` (background restores), ``overview``
(the overview page's numbers).  Templates are in ``templates/``.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
