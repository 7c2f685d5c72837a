"""Entry point: builds the Flask server and the Dash app from one Settings object.

``python app.py`` serves on HOST:PORT (default 127.0.0.1:8050); gunicorn imports
``app:server``. With no ORTHANC_URL the app runs on the embedded store in
DICOM_DIR and writes a demo study there on first start.
"""

from __future__ import annotations

import logging
from html import escape

import dash
import dash_bootstrap_components as dbc
from dash import hooks, html
from flask import Flask, g, jsonify
from werkzeug.middleware.proxy_fix import ProxyFix

from api import init_api
from api.auth import init_auth
from services.coordination import StateUnavailable
from services.stack import open_stack
from settings import ROOT, Settings

log = logging.getLogger(__name__)


def create_server(settings: Settings) -> Flask:
    """The Flask server with the PACS backend bound to it and a health endpoint."""
    server = Flask(__name__)
    if settings.trusted_proxies:
        server.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            server.wsgi_app,
            x_for=settings.trusted_proxies,
            x_proto=settings.trusted_proxies,
        )
    if settings.backend == "embedded" and settings.demo_study:
        from services.demo import ensure_demo_study

        if ensure_demo_study(settings.dicom_dir):
            log.info("wrote the demo study into %s", settings.dicom_dir)
    kick = None
    if settings.redis_url:  # the bulk loader runs in Celery workers
        from worker import drain_kicker

        kick = drain_kicker(settings.redis_url)
    stack = open_stack(**settings.stack_kwargs(), kick=kick)
    pacs, loader, state = stack.pacs, stack.loader, stack.state
    server.extensions.update(settings=settings, pacs=pacs, loader=loader, state=state)
    if stack.slots is not None:
        server.extensions["slots"] = stack.slots
    if kick is None:
        # Started by the first request, in the serving process (not a forking
        # parent); the processes of the machine take turns by a lease.
        server.before_request(loader.start)

    @server.get("/healthz")
    def healthz():
        ok = pacs.ping()
        body = {
            "status": "ok" if ok else "degraded",
            "pacs": {"backend": pacs.name, "ok": ok},
        }
        return jsonify(body), 200 if ok else 503

    @server.errorhandler(StateUnavailable)
    def state_down(exc: StateUnavailable):
        log.warning("%s", exc)
        body = {"error": "unavailable", "message": "shared state unavailable; retry"}
        return jsonify(body), 503, {"Retry-After": "2"}

    limiter = init_auth(server, settings)
    init_api(server, settings, limiter)
    return server


# Loaded in <head>, before the page's body (see head_scripts), not by Dash in
# the footer: the study page's first-paint thumbnails go through the queue.
HEAD_SCRIPTS = ("apifetch.js", "imagecache.js", "imagequeue.js")
# Started by imagequeue.js as a Web Worker, never a page script.
WORKER_SCRIPTS = ("imageworker.js",)


@hooks.index()
def head_scripts(index: str) -> str:
    """The request queue and the browser cache in <head>, with the signed-in
    user (whose cache it is) in a meta tag."""
    user = escape(g.get("cookie_identity") or "")
    tags = f'<meta name="app-user" content="{user}">' + "".join(
        f'<script src="/assets/{name}"></script>' for name in HEAD_SCRIPTS
    )
    return index.replace("</head>", tags + "</head>", 1)


def create_dash_app(settings: Settings | None = None) -> dash.Dash:
    """The Dash app (Dash Pages + Bootstrap, served from ``assets/``)."""
    settings = settings or Settings.from_env()
    server = create_server(settings)
    app = dash.Dash(
        __name__,
        server=server,
        use_pages=True,
        pages_folder=str(ROOT / "pages"),
        assets_folder=str(ROOT / "assets"),
        assets_ignore="|".join(
            "^" + name.replace(".", r"\.") + "$"
            for name in HEAD_SCRIPTS + WORKER_SCRIPTS
        ),
        title="CT/MR Viewer",
        update_title=None,
        suppress_callback_exceptions=True,
        # flask-jwt-extended's double-submit CSRF cookie and header, which
        # Dash's renderer then sends with every callback request
        csrf_token_name="csrf_access_token",
        csrf_header_name="X-CSRF-TOKEN",
    )
    app.index_string = app.index_string.replace("<html>", '<html data-bs-theme="dark">')
    app.layout = html.Div(
        [
            dbc.Navbar(
                dbc.Container(
                    [
                        dbc.NavbarBrand("CT/MR Viewer", href="/"),
                        html.Div(
                            [
                                html.Span(
                                    f"PACS: {server.extensions['pacs'].name}",
                                    className="navbar-text small text-secondary me-3",
                                ),
                                html.A(
                                    "Sign out",
                                    href="/logout",
                                    id="logout-link",
                                    className="btn btn-sm btn-outline-secondary",
                                ),
                            ],
                            className="d-flex align-items-center",
                        ),
                    ],
                    fluid=True,
                ),
                color="dark",
                dark=True,
                className="border-bottom border-secondary mb-3",
            ),
            dbc.Container(dash.page_container, fluid=True),
        ]
    )
    return app


def create_app() -> Flask:
    """Flask's factory convention, for ``flask --app app users ...``."""
    return create_dash_app().server


_built: dash.Dash | None = None


def __getattr__(name: str):
    """``app.app`` / ``app.server`` (what gunicorn imports) are built on first
    use from the environment, so importing ``create_server`` builds nothing."""
    global _built
    if name not in ("app", "server"):
        raise AttributeError(name)
    if _built is None:
        _built = create_dash_app()
    return _built if name == "app" else _built.server


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main = create_dash_app()
    settings: Settings = main.server.extensions["settings"]
    main.run(host=settings.host, port=settings.port, debug=False)
