"""Home page: search the PACS for studies; a row opens the study."""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from dash import Input, Output, callback, dcc, html

from pages._shared import get_pacs, patient_name, study_date
from services.models import PacsUnavailable
from services.pacs import StudyQuery

dash.register_page(__name__, path="/", title="Studies", name="Studies")

MODALITIES = ["CT", "MR", "CR", "DX", "US", "NM", "PT", "XA", "MG", "OT"]


def results(studies) -> html.Div:
    if not studies:
        return dbc.Alert("No study matches.", color="secondary", id="studies-empty")
    head = html.Thead(
        html.Tr(
            [
                html.Th(h)
                for h in ("Date", "Patient", "Patient ID", "Description", "Modalities")
            ]
            + [html.Th(h, className="text-end") for h in ("Series", "Images")]
        )
    )
    rows = [
        html.Tr(
            [
                html.Td(
                    dcc.Link(study_date(s.study_date), href=f"/study/{s.study_uid}")
                ),
                html.Td(
                    dcc.Link(patient_name(s.patient_name), href=f"/study/{s.study_uid}")
                ),
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
    return dbc.Table(
        [head, html.Tbody(rows)], hover=True, size="sm", id="studies-table"
    )


def layout(**_query):
    form = dbc.Row(
        [
            dbc.Col(
                dbc.Input(
                    id="search-name",
                    placeholder="Patient name (wildcards * ?)",
                    debounce=True,
                ),
                md=3,
            ),
            dbc.Col(
                dbc.Input(id="search-id", placeholder="Patient ID", debounce=True), md=2
            ),
            dbc.Col(
                dbc.Input(id="search-from", type="date", placeholder="From"), md="auto"
            ),
            dbc.Col(
                dbc.Input(id="search-to", type="date", placeholder="Until"), md="auto"
            ),
            dbc.Col(
                dbc.Select(
                    id="search-modality",
                    options=[{"label": "Any modality", "value": "any"}]
                    + [{"label": m, "value": m} for m in MODALITIES],
                    value="any",
                ),
                md=2,
            ),
            dbc.Col(dbc.Button("Search", id="search-go", color="primary"), md="auto"),
        ],
        className="g-2 mb-3 align-items-center",
    )
    return html.Div([html.H4("Studies"), form, html.Div(id="search-results")])


@callback(
    Output("search-results", "children"),
    Input("search-go", "n_clicks"),
    Input("search-name", "value"),
    Input("search-id", "value"),
    Input("search-modality", "value"),
    Input("search-from", "value"),
    Input("search-to", "value"),
)
def search(_clicks, name, patient_id, modality, start, end):
    name = (name or "").strip()
    if name and not name.endswith("*"):
        name += "*"  # a prefix search, as people type it
    query = StudyQuery(
        patient_name=name,
        patient_id=(patient_id or "").strip(),
        date_from=(start or "").replace("-", ""),
        date_to=(end or "").replace("-", ""),
        modality="" if modality in (None, "any") else modality,
        limit=100,
    )
    try:
        return results(get_pacs().find_studies(query))
    except PacsUnavailable:
        return dbc.Alert(
            "The PACS does not answer right now; try again shortly.",
            color="danger",
            id="studies-error",
        )
