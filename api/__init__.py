"""The REST API: one Flask blueprint under ``/api`` with JSON errors.

Endpoints (paths and field names as in the PRD) live in :mod:`api.tokens` and
:mod:`api.pacs`; :mod:`api.openapi` describes them at ``/api/openapi.json``.
Every error is JSON ``{"error": code, "message": text}``; unknown ``/api/...``
paths answer a JSON 404 here rather than Dash's catch-all HTML page.
"""

from __future__ import annotations

import gzip
import logging

from flask import Blueprint, Flask, current_app, jsonify, request
from flask_limiter import Limiter
from werkzeug.exceptions import HTTPException

from services.models import DecodeError, NotFound, PacsError, PacsUnavailable
from settings import Settings

log = logging.getLogger(__name__)
GZIP_MIN_BYTES = 1024
# Characters that have no business in an id and only serve path tricks.
SUSPICIOUS = ("..", "//", "\\", "%2e", "%2f", "%5c", "%00")


class BadRequest(Exception):
    """Invalid client input; the message is shown to the client."""


def error_response(status: int, code: str, message: str, **headers: str):
    response = jsonify(error=code, message=message)
    response.status_code = status
    response.headers.update(headers)
    return response


def retry_after(exc: HTTPException) -> str:
    """Seconds until a rate limit's window is over (its length, to be safe)."""
    limit = getattr(exc, "limit", None)
    try:
        return str(int(limit.limit.get_expiry()))  # type: ignore[union-attr]
    except AttributeError:
        return "60"


def create_blueprint(settings: Settings, limiter: Limiter) -> Blueprint:
    bp = Blueprint("api", __name__, url_prefix="/api")

    from api import openapi, pacs, tokens
    from api.cors import enable_cors

    tokens.register(bp, settings, limiter)
    pacs.register(bp)
    openapi.register(bp)
    # one budget per client for the whole API (login has its own, stricter)
    limiter.shared_limit(settings.api_rate_limit, scope="api")(bp)
    enable_cors(bp, settings.cors_origins)

    @bp.before_request
    def reject_path_tricks():
        raw = (
            request.environ.get("RAW_URI")
            or request.environ.get("REQUEST_URI")
            or request.full_path
        )
        path = raw.split("?", 1)[0].lower()
        if any(s in path for s in SUSPICIOUS):
            return error_response(400, "bad_request", "invalid characters in the path")
        return None

    @bp.route("/<path:_anything>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def unknown(_anything: str):
        # This rule also catches a known path asked with the wrong method.
        adapter = current_app.url_map.bind_to_environ(request.environ)
        allowed = []
        for method in ("GET", "POST"):
            try:
                endpoint, _ = adapter.match(request.path, method=method)
            except HTTPException:
                continue
            if endpoint != "api.unknown":
                allowed.append(method)
        if allowed:
            return error_response(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed here",
                Allow=", ".join(allowed),
            )
        return error_response(404, "not_found", f"no such endpoint: {request.path}")

    @bp.errorhandler(BadRequest)
    def bad_request(exc: BadRequest):
        return error_response(400, "bad_request", str(exc))

    @bp.errorhandler(NotFound)
    def not_found(exc: NotFound):
        return error_response(404, "not_found", str(exc))

    @bp.errorhandler(PacsUnavailable)
    def unavailable(exc: PacsUnavailable):
        log.warning("PACS unavailable: %s", exc)
        return error_response(
            503,
            "pacs_unavailable",
            "the PACS does not answer; try again shortly",
            **{"Retry-After": "5"},
        )

    @bp.errorhandler(DecodeError)
    def undecodable(exc: DecodeError):
        log.warning("%s", exc)
        return error_response(422, "undecodable", "this image cannot be decoded")

    @bp.errorhandler(PacsError)
    def pacs_error(exc: PacsError):
        log.warning("PACS error: %s", exc)
        return error_response(502, "pacs_error", "the PACS refused the request")

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        headers = {}
        if exc.code == 429:
            headers["Retry-After"] = str(
                exc.get_response().headers.get("Retry-After") or 60
            )
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(
            exc.code or 500, code, exc.description or exc.name, **headers
        )

    @bp.after_request
    def compress(response):
        if (
            response.mimetype == "application/json"
            and "gzip" in request.headers.get("Accept-Encoding", "")
            and not response.direct_passthrough
            and response.content_length
            and response.content_length >= GZIP_MIN_BYTES
            and "Content-Encoding" not in response.headers
        ):
            response.set_data(gzip.compress(response.get_data(), compresslevel=5))
            response.headers["Content-Encoding"] = "gzip"
            response.vary.add("Accept-Encoding")
        return response

    return bp


def init_api(server: Flask, settings: Settings, limiter: Limiter) -> None:
    server.register_blueprint(create_blueprint(settings, limiter))

    # Errors raised before the blueprint is known (e.g. 405 on an API path)
    @server.errorhandler(405)
    def method_not_allowed(exc):
        if request.path.startswith("/api/"):
            return error_response(
                405, "method_not_allowed", f"{request.method} is not allowed here"
            )
        return exc

    @server.errorhandler(429)
    def too_many(exc):
        retry = retry_after(exc)
        if request.path.startswith("/api/"):
            return error_response(
                429,
                "too_many_requests",
                "too many requests; slow down",
                **{"Retry-After": retry},
            )
        return (
            "Too many attempts; wait a minute and try again.",
            429,
            {"Retry-After": retry},
        )
