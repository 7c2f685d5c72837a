"""The study page: one card per image series, first images at once, live
load progress from the server-side bulk loader."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import ALL, Input, Output, State, callback, ctx, dcc, html, no_update

from components.series_card import ids, progress_view, series_card
from pages._shared import get_loader, get_pacs, patient_name, study_date, valid_uid
from services.models import NotFound, PacsUnavailable

dash.register_page(__name__, path_template="/study/<study_uid>", title="Study")

POLL_MS = 700


def layout(study_uid: str = "", **_query):
    if not valid_uid(study_uid):
        return dbc.Alert(
            "This is not a study address.", color="warning", id="study-error"
        )
    pacs, loader = get_pacs(), get_loader()
    try:
        study = pacs.get_study(study_uid)
        series = pacs.list_series(study_uid)
        images = pacs.series_images(study_uid)
        progress = {p.series_uid: p for p in loader.prefetch(study_uid)}
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
    loader.touch(study_uid)
    image_series = [s for s in series if images.get(s.series_uid)]
    other_series = [s for s in series if not images.get(s.series_uid)]
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
                    html.Span(
                        f"{study.patient_id} · {study_date(study.study_date)} · "
                        f"{study.study_description or 'no description'} · "
                        f"{len(image_series)} series, {study.image_count} images",
                        className="text-secondary small",
                    ),
                ],
                className="d-flex align-items-baseline flex-wrap mb-3",
            ),
            dbc.Row(cards, id="series-grid", className="g-3"),
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
