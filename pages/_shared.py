"""Helpers shared by pages (the Pages loader skips modules starting with ``_``)."""

from __future__ import annotations

from flask import current_app

from services.pacs import Pacs


def get_pacs() -> Pacs:
    """The PACS backend the running app was built with (see ``app.create_app``)."""
    return current_app.extensions["pacs"]
