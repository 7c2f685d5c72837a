"""A live panel of what the bulk loader and the PACS connection are doing."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, dcc, html

from pages._shared import get_stats

dash.register_page(__name__, path="/loader", title="Loader", name="Loader")

FIELDS = [
    ("requests_per_s", "Requests to the PACS / s"),
    ("in_flight", "In flight now"),
    ("in_flight_max", "Most in flight seen"),
    ("cap", "Cap"),
    ("hit_rate", "Cache hit rate"),
    ("fetched_mb", "Fetched from the PACS (MB)"),
    ("cache_mb", "Image cache on disk (MB)"),
    ("queue", "Images queued"),
    ("images_per_s", "Images loaded / s"),
]


def layout(**_query):
    return html.Div(
        [
            html.H4("Bulk loader"),
            dbc.Row(
                [
                    dbc.Col(
                        dbc.Card(
                            dbc.CardBody(
                                [
                                    html.Div(label, className="small text-secondary"),
                                    html.Div(
                                        "…", id=f"stat-{key}", className="stat-value"
                                    ),
                                ]
                            )
                        ),
                        md=4,
                        lg=3,
                        className="mb-3",
                    )
                    for key, label in FIELDS
                ]
            ),
            dcc.Interval(id="stats-poll", interval=1000),
        ]
    )


@callback(
    [Output(f"stat-{key}", "children") for key, _ in FIELDS],
    Input("stats-poll", "n_intervals"),
)
def refresh(_n):
    stats = get_stats()
    return [stats[key] for key, _ in FIELDS]
