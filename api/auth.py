"""Authentication for the whole server: JWTs, the login page, the page guard.

API clients send ``Authorization: Bearer <access>``; the browser UI keeps the
same tokens in httpOnly SameSite cookies, with flask-jwt-extended's
double-submit CSRF token on every state-changing request (Dash's renderer sends
it for callbacks: ``csrf_token_name``/``csrf_header_name`` in ``app.py``).

# Developer notes
- One loader per flask-jwt-extended contract, each below with why it exists.
- The page guard runs before every request that is not public: Dash pages and
  callbacks need a valid access cookie. A page load with an expired access
  token but a valid refresh cookie is let through and handed a new access
  token; access tokens close to expiry are renewed on any request.
- The secret: JWT_SECRET_KEY, required in production; otherwise one random
  secret kept in CACHE_DIR so that every worker of one machine shares it.
- With REDIS_URL, the rate limits and the revoked-token list live in Redis,
  so a logout and a client's budget hold on every worker of every machine.
"""

from __future__ import annotations

import hmac
import html
import os
import secrets
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import click
from flask import Flask, current_app, g, jsonify, redirect, request
from flask.cli import AppGroup
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    create_refresh_token,
    decode_token,
    get_jwt,
    get_jwt_identity,
    set_access_cookies,
    set_refresh_cookies,
    unset_jwt_cookies,
    verify_jwt_in_request,
)
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_limiter import HeaderNames, Limiter
from flask_limiter.util import get_remote_address
from jwt.exceptions import PyJWTError

from services.users import UserError, UserStore
from settings import Settings

DEMO_USER = ("demo", "demo1234")
# Paths anyone may fetch: no patient data behind them.
PUBLIC_PREFIXES = (
    "/login",
    "/logout",
    "/healthz",
    "/assets/",
    "/_dash-component-suites/",
    "/_favicon.ico",
    "/favicon.ico",
    "/api/",  # the API checks tokens itself
)
RENEW_WHEN_LEFT = 5 * 60  # seconds of access-token life left that trigger renewal
AUTH_ERRORS = (JWTExtendedException, PyJWTError)


def users() -> UserStore:
    return current_app.extensions["users"]


def jwt_secret(settings: Settings) -> str:
    if settings.jwt_secret_key:
        if settings.production and len(settings.jwt_secret_key) < 32:
            raise RuntimeError(
                "JWT_SECRET_KEY must be at least 32 characters in production"
            )
        return settings.jwt_secret_key
    if settings.production:
        raise RuntimeError(
            "APP_ENV=production needs JWT_SECRET_KEY (32+ random characters)"
        )
    path = Path(settings.cache_dir) / "jwt-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # the first worker to start writes it; the others read it
        with open(path, "x", opener=lambda p, f: os.open(p, f, 0o600)) as out:
            out.write(secrets.token_urlsafe(48))
    except FileExistsError:
        pass
    return path.read_text().strip()


def issue_tokens(username: str) -> tuple[str, str]:
    return create_access_token(identity=username), create_refresh_token(
        identity=username
    )


def safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect to another host after login.

    Browsers drop tabs and newlines from URLs (``/<tab>/evil`` is ``//evil``),
    so any whitespace or control character makes a target unsafe as well."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(c.isspace() or not c.isprintable() for c in target)
    ):
        return "/"
    return target


def login_limit(limiter: Limiter, settings: Settings):  # type: ignore[no-untyped-def]
    """One budget of login attempts per client for /login and /api/token/ together."""
    return limiter.shared_limit(settings.login_rate_limit, scope="login")


def init_auth(server: Flask, settings: Settings) -> Limiter:
    """Configure JWTs, users, the login page and the page guard; return the
    server's rate limiter (one per server: limits never leak between apps)."""
    server.config.update(
        JWT_SECRET_KEY=jwt_secret(settings),
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256"],
        JWT_TOKEN_LOCATION=["headers", "cookies"],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=settings.access_token_minutes),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(days=settings.refresh_token_days),
        JWT_COOKIE_SECURE=settings.production,
        JWT_COOKIE_SAMESITE="Lax",
        JWT_COOKIE_CSRF_PROTECT=True,
        JWT_SESSION_COOKIE=False,  # survive a browser restart, until expiry
    )
    jwt = JWTManager(server)
    limiter = Limiter(
        get_remote_address,
        app=server,
        headers_enabled=True,
        # the limiter would add Retry-After to every answer; only 429 and 503
        # answers carry it (set by their error handlers)
        header_name_mapping={HeaderNames.RETRY_AFTER: "X-RateLimit-Retry-After"},
        # one budget per client across every worker and machine with Redis;
        # while Redis does not answer, each process counts in memory
        storage_uri=settings.redis_url or "memory://",
        key_prefix="ctmr-limits",
        in_memory_fallback_enabled=bool(settings.redis_url),
        swallow_errors=bool(settings.redis_url),
    )
    # revoked tokens: in Redis with several machines, else beside the users
    shared = server.extensions["state"] if settings.redis_url else None
    store = UserStore(settings.users_db, revocations=shared)
    server.extensions["users"] = store
    if settings.admin_username and settings.admin_password:
        store.set_user(settings.admin_username, settings.admin_password)
    elif settings.demo_mode and not store.users():
        store.set_user(*DEMO_USER)

    @jwt.token_in_blocklist_loader
    def _revoked(_header: dict, payload: dict) -> bool:
        # Logout revokes tokens before they expire; refuse them afterwards.
        return users().is_revoked(payload["jti"])

    @jwt.user_lookup_error_loader
    def _no_user(_header: dict, payload: dict):
        return jsonify(error="unauthorized", message="unknown user"), 401

    @jwt.user_lookup_loader
    def _user(_header: dict, payload: dict) -> str | None:
        # A removed user's tokens stop working at once.
        return payload["sub"] if users().exists(payload["sub"]) else None

    for loader, message in (
        (jwt.expired_token_loader, "token expired"),
        (jwt.revoked_token_loader, "token revoked"),
    ):
        loader(
            lambda _h, _p, message=message: (
                jsonify(error="unauthorized", message=message),
                401,
            )
        )
    jwt.invalid_token_loader(
        lambda reason: (jsonify(error="unauthorized", message=reason), 401)
    )
    jwt.unauthorized_loader(
        lambda reason: (jsonify(error="unauthorized", message=reason), 401)
    )
    jwt.needs_fresh_token_loader(
        lambda _h, _p: (
            jsonify(error="unauthorized", message="fresh token required"),
            401,
        )
    )

    server.before_request(_guard_pages)
    server.after_request(_renew_access_cookie)
    _login_routes(server, settings, limiter)
    server.cli.add_command(users_cli)
    return limiter


def _guard_pages():
    """Dash pages and callbacks need a valid token (cookies); else the login page."""
    path = request.path
    if path.startswith(PUBLIC_PREFIXES):
        return None
    try:
        verify_jwt_in_request(locations=["cookies"])
        g.cookie_identity = get_jwt_identity()
        g.cookie_exp = get_jwt()["exp"]
        return None
    except AUTH_ERRORS:
        pass
    if request.method == "GET" and not path.startswith("/_dash"):
        try:  # a page load: a valid refresh cookie renews the access token
            verify_jwt_in_request(locations=["cookies"], refresh=True)
            g.cookie_identity, g.cookie_exp = get_jwt_identity(), 0
            return None
        except AUTH_ERRORS:
            return redirect(f"/login?next={quote(request.full_path.rstrip('?'))}")
    return jsonify(error="unauthorized", message="sign in again"), 401


def _renew_access_cookie(response):
    identity = g.get("cookie_identity")
    if identity and g.get("cookie_exp", 0) - time.time() < RENEW_WHEN_LEFT:
        set_access_cookie(response, create_access_token(identity=identity))
    return response


EXPIRES_COOKIE = "access_expires"
LAST_USER_COOKIE = "last_user"  # a keyed hash of who signed in last


def set_access_cookie(response, access: str) -> None:
    """The httpOnly access cookie, and beside it a readable one with its
    expiry (epoch seconds, no secret) so the page renews it in time."""
    set_access_cookies(response, access)
    response.set_cookie(
        EXPIRES_COOKIE,
        str(decode_token(access)["exp"]),
        secure=current_app.config["JWT_COOKIE_SECURE"],
        samesite=current_app.config["JWT_COOKIE_SAMESITE"],
    )


LOGIN_PAGE = """<!doctype html><html data-bs-theme="dark"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in - CT/MR Viewer</title>
<link rel="stylesheet" href="/assets/00-bootstrap-5.3.9.min.css"></head>
<body class="d-flex align-items-center justify-content-center" style="min-height:100vh">
<form method="post" action="/login" class="card p-4" style="width:22rem" id="login-form">
<h1 class="h4 mb-3">CT/MR Viewer</h1>{error}
<input type="hidden" name="next" value="{next}">
<label class="form-label" for="username">Username</label>
<input class="form-control mb-2" id="username" name="username" autocomplete="username" required autofocus>
<label class="form-label" for="password">Password</label>
<input class="form-control mb-3" id="password" name="password" type="password"
 autocomplete="current-password" required>
<button class="btn btn-primary w-100" id="login-submit" type="submit">Sign in</button>{hint}
</form></body></html>"""


def _login_routes(server: Flask, settings: Settings, limiter: Limiter) -> None:
    def page(next_url: str, error: str = "", status: int = 200):
        hint = (
            f'<p class="small text-secondary mt-3 mb-0" id="demo-hint">Demo mode: sign in as '
            f"<b>{DEMO_USER[0]}</b> / <b>{DEMO_USER[1]}</b></p>"
            if settings.demo_mode and not settings.admin_username
            else ""
        )
        alert = (
            f'<div class="alert alert-danger py-2" id="login-error">{html.escape(error)}</div>'
            if error
            else ""
        )
        body = LOGIN_PAGE.format(error=alert, next=html.escape(next_url), hint=hint)
        return body, status, {"Content-Type": "text/html; charset=utf-8"}

    @server.get("/login")
    def login_form():
        return page(safe_next(request.args.get("next")))

    @server.post("/login")
    @login_limit(limiter, settings)
    def login_submit():
        username = request.form.get("username", "")
        next_url = safe_next(request.form.get("next"))
        if not users().authenticate(username, request.form.get("password", "")):
            return page(next_url, "Wrong username or password.", 401)
        response = redirect(next_url)
        access, refresh = issue_tokens(username)
        set_access_cookie(response, access)
        set_refresh_cookies(response, refresh)
        # Another user than this browser's last one (a session that ended
        # without signing out): its HTTP cache may hold the last user's pixels.
        who = hmac.new(
            current_app.config["JWT_SECRET_KEY"].encode(), username.encode(), "sha256"
        ).hexdigest()[:32]
        if request.cookies.get(LAST_USER_COOKIE) != who:
            response.headers["Clear-Site-Data"] = '"cache"'
        response.set_cookie(
            LAST_USER_COOKIE,
            who,
            max_age=365 * 86400,
            httponly=True,
            secure=current_app.config["JWT_COOKIE_SECURE"],
            samesite=current_app.config["JWT_COOKIE_SAMESITE"],
        )
        return response

    @server.get("/logout")
    def logout():
        """Revoke the cookie tokens, clear them and the HTTP cache (the page has
        emptied IndexedDB before it comes here: assets/imagecache.js)."""
        for refresh in (False, True):
            try:
                verify_jwt_in_request(
                    locations=["cookies"], refresh=refresh, verify_type=True
                )
                payload = get_jwt()
                users().revoke(payload["jti"], payload["exp"])
            except AUTH_ERRORS:
                pass
        response = redirect("/login")
        unset_jwt_cookies(response)
        response.delete_cookie(EXPIRES_COOKIE)
        # Pixels are cached privately for a year (api/pacs.py): the browser's
        # HTTP cache forgets them with the session (a shared workstation).
        response.headers["Clear-Site-Data"] = '"cache"'
        return response


@click.group("users", cls=AppGroup, help="Manage the users who may sign in.")
def users_cli() -> None:
    pass


@users_cli.command("add", help="Create a user (or set its password).")
@click.argument("username")
@click.password_option()
def _add(username: str, password: str) -> None:
    try:
        created = users().set_user(username, password)
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{'created' if created else 'updated'} {username}")


@users_cli.command("passwd", help="Change a user's password.")
@click.argument("username")
@click.password_option()
def _passwd(username: str, password: str) -> None:
    if not users().exists(username):
        raise click.ClickException(f"no user {username}")
    try:
        users().set_user(username, password)
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"updated {username}")


@users_cli.command("remove", help="Delete a user; its tokens stop working.")
@click.argument("username")
def _remove(username: str) -> None:
    if not users().remove_user(username):
        raise click.ClickException(f"no user {username}")
    click.echo(f"removed {username}")


@users_cli.command("list", help="List the users.")
def _list() -> None:
    for name in users().users():
        click.echo(name)
