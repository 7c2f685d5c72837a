"""A series card for the study grid: first image, series facts, load progress.

The card is pure layout; the study page's one progress callback updates every
card's bar through the pattern-matching ids in :class:`ids`.
:func:`series_card_html` is the same card as plain HTML, for the study page's
first paint (see ``pages/study.py``); keep the two in step.
"""

from __future__ import annotations

from html import escape

import dash_bootstrap_components as dbc
from dash import dcc, html

from services.loader import SeriesProgress
from services.models import ImageRef, SeriesSummary

THUMB_SIZE = 256


class ids:
    """Pattern-matching ids; ``index`` is the SeriesInstanceUID."""

    @staticmethod
    def card(uid: str) -> dict:
        return {"type": "series-card", "index": uid}

    @staticmethod
    def bar(uid: str) -> dict:
        return {"type": "series-progress", "index": uid}

    @staticmethod
    def text(uid: str) -> dict:
        return {"type": "series-progress-text", "index": uid}

    @staticmethod
    def error(uid: str) -> dict:
        return {"type": "series-error", "index": uid}

    @staticmethod
    def retry(uid: str) -> dict:
        return {"type": "series-retry", "index": uid}


def describe(series: SeriesSummary) -> str:
    """The description, or a fallback that still tells series apart."""
    if series.series_description:
        return series.series_description
    number = f" {series.series_number}" if series.series_number is not None else ""
    return f"{series.modality or 'Series'} series{number} (no description)"


def thumbnail_url(image: ImageRef, size: int = THUMB_SIZE) -> str:
    return (
        f"/api/pacs/instances/{image.instance_id}/frames/{image.frame_index + 1}"
        f"/rendered?size={size}&format=jpeg&quality=85"
    )


def progress_view(p: SeriesProgress) -> dict:
    """Bar value, colour, label, error text and Retry visibility for one series."""
    percent = round(100 * p.loaded / p.total) if p.total else 100
    colour = (
        "success" if p.state == "complete" else "danger" if p.loaded == 0 else "warning"
    )
    label = f"{p.loaded} / {p.total} images loaded"
    if p.state == "error":
        error = f"{len(p.failed)} image(s) failed: {p.error}"
    elif p.state == "waiting":
        error = "Waiting for the PACS to answer…"
    else:
        error = ""
    return {
        "value": percent,
        "color": colour,
        "label": label,
        "error": error,
        "retry": {} if p.state == "error" else {"display": "none"},
    }


def series_card(
    study_uid: str, series: SeriesSummary, first: ImageRef, progress: SeriesProgress
):
    view = progress_view(progress)
    uid = series.series_uid
    number = f"#{series.series_number}" if series.series_number is not None else "#–"
    return dbc.Card(
        [
            # dcc.Link: the viewer opens without a page load (Dash's bundles,
            # plotly.js warmed by assets/app.js and IndexedDB stay as they are)
            dcc.Link(
                html.Div(
                    html.Img(
                        # loaded by assets/imagequeue.js (queue and browser cache)
                        **{"data-src": thumbnail_url(first)},
                        alt=describe(series),
                        className="thumb-img",
                    ),
                    className="thumb",
                ),
                href=f"/viewer/{study_uid}/{uid}",
                className="thumb-link",
                title="Open the series",
            ),
            dbc.CardBody(
                [
                    html.Div(
                        [
                            html.Span(number, className="series-number me-2"),
                            dbc.Badge(series.modality or "?", color="secondary"),
                            html.Span(
                                f"{series.image_count} image{'s' if series.image_count != 1 else ''}",
                                className="ms-auto small text-secondary image-count",
                            ),
                        ],
                        className="d-flex align-items-center mb-1",
                    ),
                    html.Div(
                        describe(series), className="series-description text-truncate"
                    ),
                    dbc.Progress(
                        id=ids.bar(uid),
                        value=view["value"],
                        color=view["color"],
                        className="mt-2 series-progress",
                        style={"height": "6px"},
                    ),
                    html.Div(
                        view["label"],
                        id=ids.text(uid),
                        className="small mt-1 progress-text",
                    ),
                    html.Div(
                        view["error"], id=ids.error(uid), className="small text-danger"
                    ),
                    dbc.Button(
                        "Retry",
                        id=ids.retry(uid),
                        size="sm",
                        color="danger",
                        outline=True,
                        className="mt-1",
                        style=view["retry"],
                    ),
                ]
            ),
        ],
        id=ids.card(uid),
        className="series-card h-100",
    )


def series_card_html(
    study_uid: str,
    series: SeriesSummary,
    first: ImageRef,
    progress: SeriesProgress,
    early: bool = False,
) -> str:
    """:func:`series_card` in its grid column, as the HTML Dash renders for it
    (without its ids, which stay Dash's). ``early``: the image's ``src`` is in
    the HTML, so the browser asks for it as the HTML arrives, before any
    script; ``assets/imagequeue.js`` counts it in flight."""
    view = progress_view(progress)
    src = escape(thumbnail_url(first))
    asked = f' src="{src}" fetchpriority="high"' if early else ""
    count = series.image_count
    number = f"#{series.series_number}" if series.series_number is not None else "#–"
    retry = "" if view["retry"] == {} else ' style="display:none"'
    return (
        '<div class="mb-3 col-12 col-sm-6 col-md-4 col-lg-3 col-xxl-2">'
        '<div class="card series-card h-100">'
        f'<a href="/viewer/{escape(study_uid)}/{escape(series.series_uid)}"'
        ' class="thumb-link" title="Open the series"><div class="thumb">'
        f'<img data-src="{src}"{asked} alt="{escape(describe(series))}"'
        ' class="thumb-img"></div></a><div class="card-body">'
        '<div class="d-flex align-items-center mb-1">'
        f'<span class="series-number me-2">{escape(number)}</span>'
        f'<span class="badge bg-secondary">{escape(series.modality or "?")}</span>'
        '<span class="ms-auto small text-secondary image-count">'
        f"{count} image{'s' if count != 1 else ''}</span></div>"
        '<div class="series-description text-truncate">'
        f"{escape(describe(series))}</div>"
        '<div class="progress mt-2 series-progress" style="height:6px"'
        f' data-series="{escape(series.series_uid)}">'
        f'<div class="progress-bar bg-{view["color"]}" role="progressbar"'
        f' style="width:{view["value"]}%"></div></div>'
        f'<div class="small mt-1 progress-text">{escape(view["label"])}</div>'
        f'<div class="small text-danger">{escape(view["error"])}</div>'
        f'<button class="mt-1 btn btn-outline-danger btn-sm"{retry}>Retry</button>'
        "</div></div></div>"
    )
