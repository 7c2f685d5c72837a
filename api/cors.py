"""Cross-origin access to the REST API, for web apps served from other origins.

``CORS_ORIGINS`` lists the origins (``scheme://host[:port]``) whose pages may
call ``/api/...`` with the user's credentials (cookies or a bearer token).
Empty, the default, adds no CORS header at all: the browser then allows only
same-origin calls. Pages and Dash's routes never get CORS headers: flask-cors
is bound to the API blueprint, whose ``after_request`` runs for API routes only
(a preflight ``OPTIONS`` to a page is not answered with them).

# Developer notes
- flask-cors treats an origin containing ``*``, ``?``, ``[`` ... as a regular
  expression; ``settings.parse_origins`` refuses those, so every listed origin
  matches exactly (and credentials never go to a wildcard).
- flask-cors adds ``Vary: Origin`` only when several origins are listed, yet
  with one listed origin the answer still differs between that origin and a
  same-origin request (which gets no CORS header): responses here are cached
  as immutable, so ``Vary: Origin`` is added to every API response.
"""

from __future__ import annotations

from collections.abc import Sequence

from flask import Blueprint, Response
from flask_cors import CORS

METHODS = ["GET", "POST", "OPTIONS"]
ALLOW_HEADERS = ["Authorization", "Content-Type", "X-CSRF-TOKEN", "Priority"]
# Response headers a cross-origin script may read (frames describe themselves).
EXPOSE_HEADERS = [
    "Retry-After",
    "X-Image-Rows",
    "X-Image-Columns",
    "X-Image-Dtype",
    "X-Image-Samples",
    "X-Photometric",
    "X-Pixel-Min",
    "X-Pixel-Max",
    "X-Window-Center",
    "X-Window-Width",
    "X-Image-Position",
    "X-Pixel-Spacing",
    "X-Slice-Location",
    "X-Slice-Thickness",
]
PREFLIGHT_MAX_AGE = 600  # seconds a browser may reuse a preflight answer


def enable_cors(bp: Blueprint, origins: Sequence[str]) -> None:
    """Answer CORS requests and preflights from ``origins`` on ``bp``'s routes."""
    if not origins:
        return
    CORS(
        bp,
        origins=list(origins),
        methods=METHODS,
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        supports_credentials=True,
        max_age=PREFLIGHT_MAX_AGE,
    )

    @bp.after_request
    def vary_on_origin(response: Response) -> Response:
        response.vary.add("Origin")
        return response
