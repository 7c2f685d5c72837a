"""The series viewer: ``/viewer/<studyUid>/<seriesUid>?image=N&wc=C&ww=W``.

The viewport is a Plotly figure: its axes are the image's pixel grid, and
Plotly does pan (drag) and zoom (the toolbar sets its ranges). The pixels are
drawn on a canvas under the figure's transparent plot area by
``assets/viewer.js`` from the raw frames of ``GET /api/pacs/instances/{id}/
frames/{n}`` (Hounsfield units for CT), with the window applied through a
lookup table in the browser: a scroll step or a window change is a few
milliseconds of JavaScript and no server round trip (measured against
``go.Heatmap`` and ``go.Image`` in ``bench/RESULTS.md``).

Who owns what:
- The browser (``viewer`` namespace of ``window.dash_clientside``) owns the
  image shown, window, zoom, cine and preloading; it pushes the counter,
  slider, window inputs and the loader's focus to Dash with ``set_props``.
- This module builds the page from the PACS (series, images, first image's
  metadata) and re-centres the server's bulk loader when the browser says
  the user has moved (every few images, never per step).
- Elements whose text the browser writes directly (``viewer-info``,
  ``viewer-readout``, ``viewer-status``) have no Dash children, so a Dash
  render never overwrites them.
"""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import (
    ClientsideFunction,
    Input,
    Output,
    State,
    callback,
    clientside_callback,
    dcc,
    html,
)
from flask import g

from components.series_card import describe
from pages._shared import (
    get_loader,
    get_pacs,
    number_arg,
    patient_name,
    study_date,
    valid_uid,
)
from services.models import InstanceMeta, NotFound, PacsError, PacsUnavailable

dash.register_page(
    __name__, path_template="/viewer/<study_uid>/<series_uid>", title="Viewer"
)

# Named CT windows (centre, width) in Hounsfield units; keys 1-5 in this order.
CT_PRESETS = {
    "soft": ("Soft tissue", 40, 400),
    "lung": ("Lung", -600, 1500),
    "liver": ("Liver", 90, 150),
    "bone": ("Bone", 480, 2500),
    "brain": ("Brain", 40, 80),
}
DEFAULT_FPS = 24


def frame_url(image) -> str:
    return f"/api/pacs/instances/{image.instance_id}/frames/{image.frame_index + 1}"


def error(text: str, color: str = "warning"):
    return dbc.Alert(text, color=color, id="viewer-error")


def icon_button(label: str, id: str, title: str, **kwargs):
    return dbc.Button(
        label,
        id=id,
        title=title,
        color="secondary",
        outline=True,
        size="sm",
        n_clicks=0,
        **kwargs,
    )


def titled(component, title: str):
    """A tooltip for components that take no ``title`` (dbc inputs)."""
    return html.Span(component, title=title)


def preset_options(modality: str) -> list[dict]:
    options = [
        {"label": "Image default (0)", "value": "default"},
        {"label": "Auto range", "value": "auto"},
        {"label": "Custom", "value": "custom", "disabled": True},
    ]
    if modality == "CT":
        options += [
            {"label": f"{name} ({k})", "value": key}
            for k, (key, (name, _c, _w)) in enumerate(CT_PRESETS.items(), start=1)
        ]
    return options


def cache_panel():
    """The browser cache's hit rate and settings (assets/imagecache.js)."""
    field = {"size": "sm", "type": "number", "min": 1, "debounce": True}
    return html.Div(
        [
            html.Span(id="cache-hit-rate", className="small text-secondary"),
            icon_button("Cache", "cache-toggle", "Browser image cache settings"),
            dbc.Popover(
                dbc.PopoverBody(
                    [
                        dbc.Label("Keep images (hours)", html_for="cache-expiry-hours"),
                        dbc.Input(id="cache-expiry-hours", **field),
                        dbc.Label("Space (MB)", html_for="cache-budget-mb"),
                        dbc.Input(id="cache-budget-mb", **field),
                        dbc.Button(
                            "Empty the cache",
                            id="cache-clear",
                            color="warning",
                            size="sm",
                            className="mt-2",
                            n_clicks=0,
                        ),
                        html.Div(id="cache-summary", className="small mt-2"),
                        # written by assets/viewer.js: decoded frames in memory
                        html.Div(id="memory-summary", className="small text-secondary"),
                    ]
                ),
                target="cache-toggle",
                trigger="legacy",
                placement="bottom",
            ),
        ],
        className="d-flex align-items-center gap-1 me-3 mb-1",
    )


def toolbar(total: int, start: int, modality: str, fps: int):
    group = "d-flex align-items-center gap-1 me-3 mb-1"
    return html.Div(
        [
            html.Div(
                [
                    html.Span(
                        f"{start} / {total}",
                        id="image-counter",
                        className="font-monospace me-1",
                        title="Image shown / images in the series",
                    ),
                    dbc.Input(
                        id="image-goto",
                        type="number",  # no min/max: out of range gets a message
                        placeholder="Go to",
                        size="sm",
                        debounce=True,
                        style={"width": "5.5rem"},
                    ),
                    html.Span(id="goto-feedback", className="small text-danger"),
                ],
                className=group,
            ),
            cache_panel(),
            html.Div(
                [
                    html.Label(
                        "Wheel", htmlFor="scroll-sensitivity", className="small"
                    ),
                    html.Div(
                        dcc.Slider(
                            id="scroll-sensitivity",
                            min=0.5,
                            max=3,
                            step=0.25,
                            value=1,
                            marks=None,
                            tooltip={"placement": "bottom"},
                            allow_direct_input=False,
                        ),
                        style={"width": "8rem"},
                    ),
                ],
                className=group,
                title="Images per wheel notch (0.5x-3x), remembered in this browser",
            ),
            html.Div(
                [
                    icon_button("▶", "cine-play", "Play (space)"),
                    icon_button("❚❚", "cine-pause", "Pause (space)"),
                    icon_button("■", "cine-stop", "Stop: back to the first image"),
                    titled(
                        dbc.Input(
                            id="cine-fps",
                            type="number",
                            min=1,
                            max=60,
                            step=1,
                            value=fps,
                            size="sm",
                            debounce=True,
                            style={"width": "4.2rem"},
                        ),
                        "Frames per second",
                    ),
                    html.Span("fps", className="small"),
                    dbc.Checkbox(
                        id="cine-loop", label="loop", value=True, className="small"
                    ),
                ],
                className=group,
            ),
            html.Div(
                [
                    html.Span("W/L", className="small"),
                    titled(
                        dbc.Input(
                            id="wl-center",
                            type="number",
                            size="sm",
                            debounce=True,
                            placeholder="C",
                            style={"width": "5rem"},
                        ),
                        "Window centre",
                    ),
                    titled(
                        dbc.Input(
                            id="wl-width",
                            type="number",
                            min=1,
                            size="sm",
                            debounce=True,
                            placeholder="W",
                            style={"width": "5rem"},
                        ),
                        "Window width (or right-drag on the image)",
                    ),
                    titled(
                        dbc.Select(
                            id="wl-preset",
                            options=preset_options(modality),
                            value="default",
                            size="sm",
                            style={"width": "11.5rem"},
                        ),
                        "Window presets (keys 0-5)",
                    ),
                ],
                className=group,
            ),
        ],
        className="d-flex flex-wrap align-items-center viewer-toolbar",
    )


def view_buttons(analysis_href: str = ""):
    """Zoom, reset, info and analysis: on the title row, so that the toolbar
    keeps to one row on a 1280 px screen (the viewport where a card's click
    paints the first image: assets/viewer.js, placeEarly)."""
    return html.Div(
        [
            icon_button("Fit", "zoom-fit", "Fit to window"),
            icon_button("1:1", "zoom-1to1", "One image pixel per screen pixel"),
            icon_button("+", "zoom-in", "Zoom in (+)"),
            icon_button("−", "zoom-out", "Zoom out (-)"),
            icon_button("Reset", "view-reset", "Default zoom, pan and window (r)"),
            icon_button("Info", "info-toggle", "Series information (i)"),
            # assets/analysis.js puts the image and window shown in the
            # link when it is followed
            html.A(
                "Analysis",
                id="open-analysis",
                href=analysis_href,
                className="btn btn-sm btn-outline-info",
                title="Histogram, statistics and a region of interest",
            ),
        ],
        className="d-flex align-items-center gap-1 ms-auto viewer-toolbar",
    )


def viewport(rows: int, columns: int, aspect: float):
    """A figure with no trace: the axes are the pixel grid (centres on integers)."""
    figure = go.Figure(
        layout=dict(
            xaxis=dict(range=[-0.5, columns - 0.5], visible=False),
            yaxis=dict(
                range=[rows - 0.5, -0.5],
                visible=False,
                scaleanchor="x",
                scaleratio=aspect,
            ),
            margin=dict(l=0, r=0, t=0, b=0),
            paper_bgcolor="rgba(0,0,0,0)",
            plot_bgcolor="rgba(0,0,0,0)",
            dragmode="pan",
            hovermode=False,
            showlegend=False,
        )
    )
    return html.Div(
        [
            html.Div(html.Canvas(id="viewer-canvas"), id="viewer-clip"),
            dcc.Graph(
                id="viewer-graph",
                figure=figure,
                config=dict(
                    displayModeBar=False,
                    scrollZoom=False,
                    doubleClick=False,
                    showAxisDragHandles=False,
                    responsive=True,
                ),
                style={"height": "100%", "width": "100%"},
            ),
            html.Div(id="viewer-info", className="viewer-overlay", hidden=True),
            html.Div(id="viewer-readout", className="viewer-readout"),
            html.Div(id="viewer-status", className="viewer-status"),
        ],
        id="viewer-viewport",
        tabIndex="0",
        title="Wheel or arrow keys: images · drag: pan · right-drag: window",
    )


def cine_fps(meta: InstanceMeta) -> int:
    """From the DICOM frame time when there is one, else 24."""
    fps = 1000.0 / meta.frame_time_ms if meta.frame_time_ms else DEFAULT_FPS
    return round(min(max(fps, 1), 60))


def config(study, series, images, meta: InstanceMeta, start, wc, ww) -> dict:
    """Everything the browser needs to run the series, in one store."""
    return {
        "study": study.study_uid,
        "series": series.series_uid,
        "user": str(g.get("cookie_identity") or ""),
        "urls": [frame_url(i) for i in images],
        "start": start,
        "window": [wc, ww] if wc is not None and ww and ww > 0 else None,
        "modality": series.modality,
        "presets": {k: [c, w] for k, (_n, c, w) in CT_PRESETS.items()}
        if series.modality == "CT"
        else {},
        "fps": cine_fps(meta),
        "rows": meta.rows,
        "columns": meta.columns,
        "info": {
            "Patient": f"{patient_name(study.patient_name)} ({study.patient_id or '—'})",
            "Study date": study_date(study.study_date),
            "Series": f"#{series.series_number} {describe(series)}",
        },
    }


def layout(
    study_uid: str = "",
    series_uid: str = "",
    image: str = "1",
    wc: str | None = None,
    ww: str | None = None,
    **_query,
):
    if not (valid_uid(study_uid) and valid_uid(series_uid)):
        return error("This is not a series address.")
    pacs = get_pacs()
    try:
        study = pacs.get_study(study_uid)
        series = next(
            s for s in pacs.list_series(study_uid) if s.series_uid == series_uid
        )
        images = pacs.list_images(study_uid, series_uid)
        if not images:
            return error("This series has no images.", "secondary")
        start = min(max(int(image) if image.isdigit() else 1, 1), len(images))
        meta = pacs.get_instance_meta(images[start - 1].instance_id)
    except (NotFound, StopIteration):
        return error("No such series in the PACS.")
    except PacsUnavailable:
        return error("The PACS does not answer right now.", "danger")
    except PacsError as exc:
        return error(f"This series cannot be shown: {exc}", "danger")
    loader = get_loader()
    loader.prefetch(study_uid)
    loader.focus(study_uid, series_uid, start - 1)
    spacing = meta.pixel_spacing
    aspect = spacing[0] / spacing[1] if spacing and spacing[1] > 0 else 1.0
    return html.Div(
        [
            html.Div(
                [
                    html.A(
                        "← Study", href=f"/study/{study_uid}", className="me-3 small"
                    ),
                    html.H5(
                        f"#{series.series_number} {describe(series)}",
                        className="mb-0 me-3 text-truncate",
                    ),
                    html.Span(
                        f"{series.modality} · {len(images)} images",
                        className="small text-secondary text-nowrap",
                    ),
                    view_buttons(f"/analysis/{study_uid}/{series_uid}?image={start}"),
                ],
                className="d-flex align-items-center mb-1",
            ),
            toolbar(len(images), start, series.modality, cine_fps(meta)),
            viewport(meta.rows, meta.columns, aspect),
            dcc.Slider(
                id="viewer-slider",
                min=1,
                max=len(images),
                step=1,
                value=start,
                marks=None,
                tooltip={"placement": "bottom"},
                updatemode="drag",
                allow_direct_input=False,  # the toolbar has image-goto
                className="mt-1",
            ),
            dcc.Store(
                id="viewer-config",
                data=config(
                    study,
                    series,
                    images,
                    meta,
                    start,
                    number_arg(wc),
                    number_arg(ww),
                ),
            ),
            dcc.Store(id="viewer-focus", data=start),
            dcc.Store(id="viewer-ready"),
        ],
        className="viewer-page",
    )


# -- browser side (assets/viewer.js): every control acts without a server trip --

# (Callbacks without outputs: the browser draws, and pushes what Dash shows
# with set_props.)
clientside_callback(
    ClientsideFunction(namespace="viewer", function_name="init"),
    Output("viewer-ready", "data"),
    Input("viewer-config", "data"),
)
clientside_callback(
    ClientsideFunction(namespace="viewer", function_name="slide"),
    Input("viewer-slider", "value"),
    prevent_initial_call=True,
)
clientside_callback(
    ClientsideFunction(namespace="viewer", function_name="goto"),
    Output("goto-feedback", "children"),
    Input("image-goto", "value"),
    prevent_initial_call=True,
)
clientside_callback(
    ClientsideFunction(namespace="viewer", function_name="command"),
    Input("cine-play", "n_clicks"),
    Input("cine-pause", "n_clicks"),
    Input("cine-stop", "n_clicks"),
    Input("zoom-fit", "n_clicks"),
    Input("zoom-1to1", "n_clicks"),
    Input("zoom-in", "n_clicks"),
    Input("zoom-out", "n_clicks"),
    Input("view-reset", "n_clicks"),
    Input("info-toggle", "n_clicks"),
    prevent_initial_call=True,
)
clientside_callback(
    ClientsideFunction(namespace="viewer", function_name="settings"),
    Input("scroll-sensitivity", "value"),
    Input("cine-fps", "value"),
    Input("cine-loop", "value"),
    prevent_initial_call=True,
)
clientside_callback(
    ClientsideFunction(namespace="viewer", function_name="cache"),
    Output("cache-summary", "children"),
    Input("cache-expiry-hours", "value"),
    Input("cache-budget-mb", "value"),
    Input("cache-clear", "n_clicks"),
    Input("cache-toggle", "n_clicks"),
    prevent_initial_call=True,
)
clientside_callback(
    ClientsideFunction(namespace="viewer", function_name="window"),
    Output("wl-preset", "value"),
    Input("wl-center", "value"),
    Input("wl-width", "value"),
    Input("wl-preset", "value"),
    prevent_initial_call=True,
)


@callback(
    Input("viewer-focus", "data"),
    State("viewer-config", "data"),
    prevent_initial_call=True,
)
def refocus(value, where):
    """Re-centre the bulk loader on the image shown (the browser sends this
    only every few images, never per step)."""
    if value and where:
        get_loader().focus(where["study"], where["series"], int(value) - 1)
