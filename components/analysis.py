"""Figures and tables of the analysis page (``pages/analysis.py``).

Pure layout: each function takes numbers from :mod:`services.analysis` and
returns a Plotly figure or a Dash component; none reads the PACS. Tables carry
each exact value in a ``data-value`` attribute beside the rounded text.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import html

from services.analysis import Box, Histogram, SeriesVolume, Stats

WINDOW_FILL = "rgba(255, 193, 7, 0.14)"
WINDOW_LINE = "rgba(255, 193, 7, 0.9)"
ROI_LINE = "#0dcaf0"
DARK = dict(
    template="plotly_dark",
    paper_bgcolor="rgba(0,0,0,0)",
    plot_bgcolor="rgba(0,0,0,0)",
)


def number(value: float) -> str:
    return f"{value:,.1f}"


def row(label: str, value):
    """A table row: a header cell and a value (text or a cell)."""
    cell = value if isinstance(value, html.Td) else html.Td(value)
    return html.Tr([html.Th(label), cell])


def value_cell(value: float, text: str | None = None):
    return html.Td(text or number(value), **{"data-value": repr(float(value))})


def stats_rows(s: Stats, unit: str) -> list:
    """Rows for a :class:`Stats`: mean, SD, min, max (the count is the caller's)."""
    return [
        row(f"Mean ({unit})", value_cell(s.mean)),
        row(f"SD ({unit})", value_cell(s.std)),
        row(f"Min ({unit})", value_cell(s.min)),
        row(f"Max ({unit})", value_cell(s.max)),
    ]


def key_value_table(rows: list, id: str):
    return dbc.Table(html.Tbody(rows), id=id, size="sm", className="mb-0 small")


def window_shapes(center: float, width: float) -> list[dict]:
    """The window as a shaded band with its two edges, over the whole height."""
    lo, hi = center - width / 2, center + width / 2
    band = dict(
        type="rect",
        xref="x",
        yref="paper",
        x0=lo,
        x1=hi,
        y0=0,
        y1=1,
        fillcolor=WINDOW_FILL,
        line=dict(width=0),
        layer="below",
        name="window",
    )
    edge = dict(
        type="line",
        xref="x",
        yref="paper",
        y0=0,
        y1=1,
        line=dict(color=WINDOW_LINE, width=1.5, dash="dot"),
    )
    return [band, {**edge, "x0": lo, "x1": lo}, {**edge, "x0": hi, "x1": hi}]


def histogram_figure(hist: Histogram, window: tuple[float, float], unit: str):
    """Counts per bin (log scale: air or background dwarfs tissue) and the window."""
    center, width = window
    figure = go.Figure(
        go.Bar(
            x=hist.centers.tolist(),
            y=hist.counts.tolist(),
            width=hist.width,
            marker=dict(color="#6c9bd2", line=dict(width=0)),
            hovertemplate=f"%{{x:.0f}} {unit}: %{{y}} voxels<extra></extra>",
        )
    )
    figure.update_layout(
        **DARK,
        shapes=window_shapes(center, width),
        margin=dict(l=50, r=10, t=10, b=40),
        xaxis_title=unit,
        yaxis=dict(title="voxels", type="log"),
        bargap=0,
        height=300,
    )
    return figure


def slice_figure(per_slice: Sequence[Stats], current: int, unit: str):
    """Mean ± SD, min and max per image, with a line at the current image."""
    n = list(range(1, len(per_slice) + 1))
    mean = [s.mean for s in per_slice]
    upper = [s.mean + s.std for s in per_slice]
    lower = [s.mean - s.std for s in per_slice]
    line = dict(width=1)
    figure = go.Figure(
        [
            go.Scatter(x=n, y=upper, line=dict(width=0), hoverinfo="skip"),
            go.Scatter(
                x=n,
                y=lower,
                fill="tonexty",
                fillcolor="rgba(108,155,210,0.25)",
                line=dict(width=0),
                name="± SD",
                hoverinfo="skip",
            ),
            go.Scatter(x=n, y=mean, name="mean", line=dict(color="#6c9bd2")),
            go.Scatter(
                x=n,
                y=[s.min for s in per_slice],
                name="min",
                line={**line, "dash": "dot"},
            ),
            go.Scatter(
                x=n,
                y=[s.max for s in per_slice],
                name="max",
                line={**line, "dash": "dot"},
            ),
        ]
    )
    figure.update_layout(
        **DARK,
        shapes=[current_image_line(current)],
        margin=dict(l=50, r=10, t=10, b=40),
        xaxis_title="image",
        yaxis_title=unit,
        showlegend=False,
        hovermode="x unified",
        height=240,
    )
    return figure


def current_image_line(image_number: int) -> dict:
    return dict(
        type="line",
        xref="x",
        yref="paper",
        x0=image_number,
        x1=image_number,
        y0=0,
        y1=1,
        line=dict(color=WINDOW_LINE, width=1.5),
    )


def box_shape(box: Box) -> dict:
    """The box drawn on the pixel edges around it (centres are integers)."""
    return dict(
        type="rect",
        xref="x",
        yref="y",
        x0=box.x - 0.5,
        x1=box.x + box.width - 0.5,
        y0=box.y - 0.5,
        y1=box.y + box.height - 0.5,
        line=dict(color=ROI_LINE, width=2),
        editable=True,
    )


def image_figure(png: bytes, rows: int, columns: int, aspect: float, box: Box | None):
    """The windowed image (pixel centres on integers) where a box can be drawn."""
    source = "data:image/png;base64," + base64.b64encode(png).decode()
    figure = go.Figure(go.Image(source=source, x0=0, dx=1, y0=0, dy=1, hoverinfo="x+y"))
    figure.update_layout(
        **DARK,
        xaxis=dict(range=[-0.5, columns - 0.5], visible=False),
        yaxis=dict(
            range=[rows - 0.5, -0.5], visible=False, scaleanchor="x", scaleratio=aspect
        ),
        margin=dict(l=0, r=0, t=0, b=0),
        dragmode="drawrect",
        newshape=dict(line=dict(color=ROI_LINE, width=2)),
        shapes=[box_shape(box)] if box else [],
        height=420,
        uirevision="image",
    )
    return figure


def slice_table(per_slice: Sequence[Stats], id: str):
    """One row per image: mean, SD, min, max."""
    head = html.Thead(
        html.Tr([html.Th(h) for h in ("Image", "Mean", "SD", "Min", "Max")])
    )
    body = html.Tbody(
        [
            html.Tr(
                [
                    html.Td(str(i)),
                    value_cell(s.mean),
                    value_cell(s.std),
                    value_cell(s.min),
                    value_cell(s.max),
                ]
            )
            for i, s in enumerate(per_slice, start=1)
        ]
    )
    return html.Div(
        dbc.Table([head, body], id=id, size="sm", striped=True, className="small mb-0"),
        className="analysis-scroll",
    )


def card(title, *children, id=None):
    """A Bootstrap card with a small header (given ``id`` when set)."""
    header = dbc.CardHeader(title, className="small", **({"id": id} if id else {}))
    return dbc.Card(
        [header, dbc.CardBody(list(children), className="p-2")], className="mb-3"
    )


def roi_inputs(ids: Sequence[str], box: Box):
    """Four number inputs (x, y, w, h) with ``ids``, holding ``box``."""

    def field(id, label, value):
        return dbc.InputGroup(
            [
                dbc.InputGroupText(label),
                dbc.Input(
                    id=id, type="number", value=value, min=0, step=1, debounce=True
                ),
            ],
            size="sm",
            style={"width": "7.5rem"},
        )

    values = (box.x, box.y, box.width, box.height)
    labels = ("x", "y", "w", "h")
    return html.Div(
        [field(i, label, v) for i, label, v in zip(ids, labels, values, strict=True)],
        className="d-flex flex-wrap gap-1 mb-2",
        title="Box in pixels: columns x..x+w-1, rows y..y+h-1 (or drag on the image)",
    )


def volume_table(vol: SeriesVolume, whole: Stats, window: tuple[float, float]):
    """Shape, spacing, voxel count, statistics and window of the series."""
    dz, dy, dx = (f"{v:g}" if v else "?" for v in vol.spacing)
    shape = " × ".join(str(v) for v in vol.pixels.shape)
    return key_value_table(
        [
            row("Images × rows × columns", shape),
            row("Spacing (mm)", f"{dz} × {dy} × {dx}"),
            row("Voxels", value_cell(whole.count, f"{whole.count:,}")),
            *stats_rows(whole, vol.unit),
            row("Window (C / W)", f"{window[0]:g} / {window[1]:g}"),
        ],
        "volume-stats",
    )
