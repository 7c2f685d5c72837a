"""The study page: one card per image series, first images at once, live
load progress from the server-side bulk loader.

The page's HTML itself carries a plain copy of the cards (:func:`first_paint`),
so the browser asks for the first images and paints them while Dash's bundles
load (the first five are in the HTML as ``src``); ``assets/app.js`` removes
the copy once Dash has drawn the page and its first images (CSS hides Dash's
page until then, so nothing blinks).
"""

from __future__ import annotations

import re
from html import escape

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, ctx, dcc, hooks, html, no_update
from flask import request

from components.series_card import ids, progress_view, series_card, series_card_html
from pages._shared import (
    StudyView,
    get_loader,
    get_pacs,
    patient_name,
    study_date,
    study_view,
    valid_uid,
)
from services.models import NotFound, PacsError, PacsUnavailable

dash.register_page(__name__, path_template="/study/<study_uid>", title="Study")

POLL_MS = 700
PATH_RE = re.compile(r"/study/([0-9.]{1,64})")
SCRIPT_RE = re.compile(r'<script src="([^"]+)"')
ENTRY = '<div id="react-entry-point">'
FIRST_ROW = 6  # cards in the first row of a wide screen (xxl: 6 columns)
# first images the HTML asks for itself: the page's queue allows 5 in flight
# (assets/imagequeue.js MAX_IN_FLIGHT) and counts these among them
EARLY = 5


def facts(view: StudyView) -> str:
    study = view.study
    return (
        f"{study.patient_id} · {study_date(study.study_date)} · "
        f"{study.study_description or 'no description'} · "
        f"{len(view.image_series)} series, {study.image_count} images"
    )


@hooks.index()
def first_paint(index: str) -> str:
    """The study page's HTML with a plain copy of its header and cards before
    Dash's entry point: the browser asks for the first :data:`EARLY`
    thumbnails as the HTML arrives (``src``), the page's queue
    (``assets/imagequeue.js``, in ``<head>``) for the others as slots free
    up, without waiting for IndexedDB or for Dash (bundles, layout, then the
    page callback) to draw them."""
    match = PATH_RE.fullmatch(request.path)
    if not match or not valid_uid(match[1]) or ENTRY not in index:
        return index
    try:
        view = study_view(match[1])
    except PacsError:  # the page itself says what is wrong
        return index
    uid = match[1]
    cards = [
        series_card_html(
            uid,
            s,
            view.images[s.series_uid][0],
            view.progress[s.series_uid],
            early=i < EARLY,
        )
        for i, s in enumerate(view.image_series)
    ]
    # Dash's scripts come after the cards: announced after the first row,
    # they are asked for after the first row's images (the queue holds the
    # thumbnails to 5 at a time, leaving a connection for them).
    preloads = "".join(
        f'<link rel="preload" as="script" href="{src}">'
        for src in SCRIPT_RE.findall(index)
    )
    grid = "".join(cards[:FIRST_ROW]) + preloads + "".join(cards[FIRST_ROW:])
    shell = (
        '<div id="first-paint"><nav class="navbar navbar-expand-md navbar-dark'
        ' bg-dark border-bottom border-secondary mb-3"><div class="container-fluid">'
        '<a class="navbar-brand" href="/">CT/MR Viewer</a>'
        '<div class="d-flex align-items-center"><span class="navbar-text small'
        f' text-secondary me-3">PACS: {escape(get_pacs().name)}</span>'
        '<a href="/logout" class="btn btn-sm btn-outline-secondary">Sign out</a>'
        '</div></div></nav><div class="container-fluid">'
        '<div class="d-flex align-items-baseline flex-wrap mb-3">'
        '<a href="/" class="me-3 small">← Studies</a>'
        f'<h4 class="mb-0 me-3">{escape(patient_name(view.study.patient_name))}</h4>'
        f'<span class="text-secondary small">{escape(facts(view))}</span></div>'
        f'<div class="g-3 row">{grid}</div></div></div>'
    )
    return index.replace(ENTRY, shell + ENTRY, 1)


def layout(study_uid: str = "", **_query):
    if not valid_uid(study_uid):
        return dbc.Alert(
            "This is not a study address.", color="warning", id="study-error"
        )
    try:
        view = study_view(study_uid)
    except NotFound:
        return dbc.Alert(
            "No such study in the PACS.", color="warning", id="study-error"
        )
    except PacsUnavailable:
        return dbc.Alert(
            [
                "The PACS does not answer right now. ",
                html.A("Try again", href=f"/study/{study_uid}"),
            ],
            color="danger",
            id="study-error",
        )
    study, images, progress = view.study, view.images, view.progress
    image_series, other_series = view.image_series, view.other_series
    cards = [
        dbc.Col(
            series_card(study_uid, s, images[s.series_uid][0], progress[s.series_uid]),
            xs=12,
            sm=6,
            md=4,
            lg=3,
            xxl=2,
            className="mb-3",
        )
        for s in image_series
    ]
    complete = all(p.state == "complete" for p in progress.values())
    return html.Div(
        [
            html.Div(
                [
                    html.A("← Studies", href="/", className="me-3 small"),
                    html.H4(patient_name(study.patient_name), className="mb-0 me-3"),
                    html.Span(facts(view), className="text-secondary small"),
                ],
                className="d-flex align-items-baseline flex-wrap mb-3",
            ),
            dbc.Row(cards, id="series-grid", className="g-3"),
            None
            if cards
            else dbc.Alert(
                "This study has no image series to show"
                + (" (only the series listed below)." if other_series else "."),
                color="info",
                id="study-empty",
            ),
            html.Div(
                [
                    html.H6("Other series (no images)", className="mt-3"),
                    html.Ul(
                        [
                            html.Li(
                                f"#{s.series_number} {s.modality} {s.series_description}"
                            )
                            for s in other_series
                        ],
                        id="other-series",
                    ),
                ]
            )
            if other_series
            else None,
            dcc.Store(id="study-uid", data=study_uid),
            dcc.Interval(id="progress-poll", interval=POLL_MS, disabled=complete),
        ]
    )


@callback(
    Output(ids.bar(ALL), "value"),
    Output(ids.bar(ALL), "color"),
    Output(ids.text(ALL), "children"),
    Output(ids.error(ALL), "children"),
    Output(ids.retry(ALL), "style"),
    Output("progress-poll", "disabled"),
    Input("progress-poll", "n_intervals"),
    State("study-uid", "data"),
    State(ids.bar(ALL), "id"),
)
def poll_progress(_n, study_uid, bar_ids):
    """One poll serves every card; it stops when every series is complete."""
    loader = get_loader()
    loader.touch(study_uid)
    try:
        by_uid = {p.series_uid: progress_view(p) for p in loader.progress(study_uid)}
    except PacsUnavailable:
        return [no_update] * 5 + [False]
    views = [by_uid.get(i["index"]) for i in bar_ids]
    if any(v is None for v in views):
        return [no_update] * 6
    done = all(v["value"] == 100 and v["color"] == "success" for v in views)
    return (
        [v["value"] for v in views],
        [v["color"] for v in views],
        [v["label"] for v in views],
        [v["error"] for v in views],
        [v["retry"] for v in views],
        done,
    )


@callback(
    Output("progress-poll", "disabled", allow_duplicate=True),
    Input(ids.retry(ALL), "n_clicks"),
    State("study-uid", "data"),
    prevent_initial_call=True,
)
def retry_series(clicks, study_uid):
    if not ctx.triggered_id or not any(clicks):
        return no_update
    get_loader().retry(study_uid, ctx.triggered_id["index"])
    return False  # poll again until it settles
