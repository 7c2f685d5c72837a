"""Home page: the studies in the PACS."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import html

from pages._shared import get_pacs

dash.register_page(__name__, path="/", title="Studies", name="Studies")


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if len(value) == 8 else value or "—"


def layout(**_query):
    studies = get_pacs().find_studies()
    rows = [
        html.Tr(
            [
                html.Td(_date(s.study_date)),
                html.Td(s.patient_name or "—"),
                html.Td(s.patient_id),
                html.Td(s.study_description or "—"),
                html.Td(", ".join(s.modalities)),
                html.Td(s.series_count, className="text-end"),
                html.Td(s.image_count, className="text-end"),
            ],
            id={"type": "study-row", "index": s.study_uid},
        )
        for s in studies
    ]
    head = html.Thead(
        html.Tr(
            [
                html.Th(h)
                for h in ("Date", "Patient", "Patient ID", "Description", "Modalities")
            ]
            + [html.Th(h, className="text-end") for h in ("Series", "Images")]
        )
    )
    return html.Div(
        [
            html.H4("Studies"),
            dbc.Table(
                [head, html.Tbody(rows)], hover=True, size="sm", id="studies-table"
            )
            if rows
            else dbc.Alert("No studies in the PACS.", color="secondary"),
        ]
    )
