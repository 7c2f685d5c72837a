"""Token endpoints: ``POST /api/token/``, ``/api/token/refresh/``, ``/api/token/revoke/``."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from flask_jwt_extended import (
    create_access_token,
    decode_token,
    get_jwt,
    get_jwt_identity,
    jwt_required,
)
from flask_limiter import Limiter

from api import BadRequest, error_response
from api.auth import AUTH_ERRORS, issue_tokens, login_limit, set_access_cookie, users
from settings import Settings


def json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object body")
    return body


def text_field(body: dict, name: str) -> str | None:
    """A string field that is valid text (JSON allows lone surrogates; we don't)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{name} is not valid text") from None
    return value


def register(bp: Blueprint, settings: Settings, limiter: Limiter) -> None:
    @bp.post("/token/")
    @login_limit(limiter, settings)
    def token():
        body = json_body()
        username, password = text_field(body, "username"), text_field(body, "password")
        if username is None or password is None:
            raise BadRequest("username and password (strings) are required")
        if not users().authenticate(username, password):
            return error_response(401, "unauthorized", "wrong username or password")
        access, refresh = issue_tokens(username)
        return jsonify(access=access, refresh=refresh)

    @bp.post("/token/refresh/")
    def refresh():
        """The refresh token comes in the body (PRD) or, for the browser, in its
        cookie (CSRF-checked by flask-jwt-extended)."""
        body = request.get_json(silent=True)
        if isinstance(body, dict) and "refresh" in body:
            token = text_field(body, "refresh") or ""
            try:
                payload = decode_token(token)
            except AUTH_ERRORS:
                return error_response(
                    401, "unauthorized", "invalid or expired refresh token"
                )
            if payload.get("type") != "refresh" or users().is_revoked(payload["jti"]):
                return error_response(401, "unauthorized", "not a valid refresh token")
            identity = payload["sub"]
        else:
            return _refresh_from_cookie()
        if not users().exists(identity):
            return error_response(401, "unauthorized", "unknown user")
        return jsonify(access=create_access_token(identity=identity))

    @jwt_required(refresh=True, locations=["cookies"])
    def _refresh_from_cookie():
        access = create_access_token(identity=get_jwt_identity())
        response = jsonify(access=access)
        set_access_cookie(response, access)
        return response

    @bp.post("/token/revoke/")
    @jwt_required(verify_type=False)
    def revoke():
        """Revoke the presented token (access or refresh) and, when the body
        names it, the refresh token too: a full logout."""
        payload = get_jwt()
        users().revoke(payload["jti"], payload["exp"])
        body = request.get_json(silent=True)
        if isinstance(body, dict) and body.get("refresh") is not None:
            other_token = text_field(body, "refresh") or ""
            try:
                other = decode_token(other_token)
                if other["sub"] == payload["sub"]:
                    users().revoke(other["jti"], other["exp"])
            except AUTH_ERRORS:
                pass
        return jsonify(revoked=True)
