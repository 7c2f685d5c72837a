"""Analysis of a series: ``/analysis/<studyUid>/<seriesUid>?image=N&wc=C&ww=W``.

An example page built only on ``services/`` (see ``docs/extending.md``): the
intensity histogram of the whole series (Hounsfield units for CT, rescaled
values for MR) with the window shown as a band, statistics per image and for
the volume, and the mean and SD in a box on the current image. The box is
drawn on the image (drag) or typed in pixels; ``image``, ``wc`` and ``ww``
come from the viewer's URL (its *Analysis* link), else image 1 and the image's
own window.

Who owns what: :mod:`services.analysis` computes every number;
:mod:`components.analysis` draws figures and tables; this module reads the
URL, calls them, and answers the two interactions (draw a box, move to
another image).
"""

from __future__ import annotations

from urllib.parse import urlencode

import dash
import dash_bootstrap_components as dbc
from dash import (
    ClientsideFunction,
    Input,
    Output,
    Patch,
    State,
    callback,
    clientside_callback,
    ctx,
    dcc,
    html,
    no_update,
)

from components import analysis as ui
from components.series_card import describe
from pages._shared import get_pacs, number_arg, valid_uid
from services import analysis
from services.analysis import AnalysisError, Box
from services.models import NotFound, PacsError, PacsUnavailable

dash.register_page(
    __name__, path_template="/analysis/<study_uid>/<series_uid>", title="Analysis"
)

BINS = 256
SLIDER = "analysis-slider"
PLAIN = {"displaylogo": False}
ROI_FIELDS = ("roi-x", "roi-y", "roi-w", "roi-h")


def error(text: str, color: str = "warning"):
    return dbc.Alert(text, color=color, id="analysis-error")


def viewer_href(cfg: dict, image: int) -> str:
    c, w = cfg["window"]
    query = urlencode({"image": image, "wc": f"{c:g}", "ww": f"{w:g}"})
    return f"/viewer/{cfg['study']}/{cfg['series']}?{query}"


def image_panel(cfg: dict, image: int, box: Box | None):
    """The current image, windowed as the histogram shows, with the box."""
    instance_id, frame = cfg["images"][image - 1]
    c, w = cfg["window"]
    png = get_pacs().render_frame(instance_id, frame, center=c, width=w)
    return ui.image_figure(png, cfg["rows"], cfg["columns"], cfg["aspect"], box)


def roi_alert(text: str, color: str = "warning"):
    return dbc.Alert(text, color=color, id="roi-error", className="small")


def roi_result(cfg: dict, image: int, box: Box):
    """The box's statistics on the current image, or why there are none."""
    instance_id, frame = cfg["images"][image - 1]
    try:
        s = analysis.roi_stats(get_pacs().get_frame(instance_id, frame), box)
    except AnalysisError as exc:
        return roi_alert(str(exc))
    dy, dx = cfg["spacing"][1:]
    area = f"{s.count * dy * dx:,.1f} mm²" if dy and dx else "—"
    rows = [
        ui.row("Box (x, y, w × h)", f"{box.x}, {box.y}, {box.width} × {box.height} px"),
        ui.row("Pixels", ui.value_cell(s.count, str(s.count))),
        ui.row("Area", area),
        *ui.stats_rows(s, cfg["unit"]),
    ]
    return ui.key_value_table(rows, "roi-stats")


def typed_box(*values) -> Box:
    """The box typed in the inputs (None for an empty or invalid field)."""
    if any(v is None for v in values):
        raise AnalysisError("Enter x, y, width and height in whole pixels.")
    return Box(*(int(v) if float(v).is_integer() else v for v in values))


def histogram_card(hist, window, unit):
    title = (
        f"Histogram of the series ({unit}, {BINS} bins); "
        f"window C {window[0]:g} / W {window[1]:g} shaded"
    )
    figure = ui.histogram_figure(hist, window, unit)
    return ui.card(
        title, dcc.Graph(id="analysis-histogram", figure=figure, config=PLAIN)
    )


def roi_card(cfg, start, box):
    n = len(cfg["images"])
    slider = dcc.Slider(
        id="analysis-slider",
        min=1,
        max=n,
        step=1,
        value=start,
        marks=None,
        tooltip={"placement": "bottom"},
        allow_direct_input=False,
    )
    image = dcc.Graph(
        id="analysis-image",
        figure=image_panel(cfg, start, box),
        config={**PLAIN, "modeBarButtonsToAdd": ["drawrect", "eraseshape"]},
    )
    return ui.card(
        f"Region of interest on image {start} / {n} (drag on the image to draw a box)",
        slider,
        ui.roi_inputs(ROI_FIELDS, box),
        image,
        html.Div(roi_result(cfg, start, box), id="roi-result"),
        id="roi-title",
    )


def per_image_card(per_slice, start, unit):
    figure = ui.slice_figure(per_slice, start, unit)
    return ui.card(
        f"Per image: mean ± SD, min and max ({unit})",
        dcc.Graph(id="slice-plot", figure=figure, config=PLAIN),
        ui.slice_table(per_slice, "slice-stats"),
    )


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
        series = next(
            s for s in pacs.list_series(study_uid) if s.series_uid == series_uid
        )
        vol = analysis.load_volume(pacs, study_uid, series_uid)
        start = min(max(int(image) if image.isdigit() else 1, 1), len(vol.images))
        meta = pacs.get_instance_meta(vol.images[start - 1].instance_id)
        per_slice = analysis.slice_stats(vol.pixels)
        whole = analysis.volume_stats(vol.pixels)
        hist = analysis.histogram(vol.pixels, BINS)
    except (NotFound, StopIteration):
        return error("No such series in the PACS.")
    except PacsUnavailable:
        return error("The PACS does not answer right now.", "danger")
    except (AnalysisError, PacsError) as exc:
        return error(f"This series cannot be analysed: {exc}", "danger")
    c, w = number_arg(wc), number_arg(ww)
    if c is not None and w and w > 0:
        window = (c, w)
    else:  # the image's own, as the viewer opens it
        window = analysis.image_window(meta, vol.pixels[start - 1])
    _dz, dy, dx = vol.spacing
    cfg = {  # what the callbacks need, in the page
        "study": study_uid,
        "series": series_uid,
        "images": [[i.instance_id, i.frame_index] for i in vol.images],
        "rows": meta.rows,
        "columns": meta.columns,
        "aspect": dy / dx if dy and dx else 1.0,
        "spacing": list(vol.spacing),
        "window": list(window),
        "unit": vol.unit,
    }
    box = analysis.centre_box(meta.rows, meta.columns)
    header = html.Div(
        [
            html.A(
                "← Viewer",
                href=viewer_href(cfg, start),
                id="analysis-to-viewer",
                className="me-3 small",
            ),
            html.H5(
                f"#{series.series_number} {describe(series)} · analysis",
                className="mb-0 me-3 text-truncate",
            ),
            html.Span(
                f"{series.modality} · {len(vol.images)} images",
                className="small text-secondary",
            ),
        ],
        className="d-flex align-items-baseline mb-2",
    )
    return html.Div(
        [
            header,
            dbc.Row(
                [
                    dbc.Col(histogram_card(hist, window, vol.unit), lg=8),
                    dbc.Col(
                        ui.card("Volume", ui.volume_table(vol, whole, window)), lg=4
                    ),
                ]
            ),
            dbc.Row(
                [
                    dbc.Col(roi_card(cfg, start, box), lg=6),
                    dbc.Col(per_image_card(per_slice, start, vol.unit), lg=6),
                ]
            ),
            dcc.Store(id="analysis-config", data=cfg),
            dcc.Store(id="analysis-drawn"),
        ],
        className="analysis-page",
    )


# A drawn or moved rectangle, filtered in the browser (assets/analysis.js):
# Plotly sends other relayout events just after a drawing (autosize), and a
# server callback fired again at once would have its first answer dropped.
clientside_callback(
    ClientsideFunction(namespace="analysis", function_name="drawn"),
    Output("analysis-drawn", "data"),
    Input("analysis-image", "relayoutData"),
    prevent_initial_call=True,
)


@callback(
    *(Output(id, "value") for id in ROI_FIELDS),
    Input("analysis-drawn", "data"),
    State("analysis-config", "data"),
    prevent_initial_call=True,
)
def drawn(corners, cfg):
    """A box drawn on the image fills the inputs (snapped to its pixels)."""
    try:
        box = analysis.box_from_corners(*corners, (cfg["rows"], cfg["columns"]))
    except (AnalysisError, TypeError):
        return (no_update,) * 4
    return box.x, box.y, box.width, box.height


@callback(
    Output("analysis-image", "figure"),
    Output("roi-result", "children"),
    Output("slice-plot", "figure"),
    Output("analysis-to-viewer", "href"),
    Output("roi-title", "children"),
    Input("analysis-slider", "value"),
    *(Input(id, "value") for id in ROI_FIELDS),
    State("analysis-config", "data"),
    prevent_initial_call=True,
)
def show(image, x, y, w, h, cfg):
    """Another image or another box: the image, the box's numbers, the marker."""
    try:
        box = typed_box(x, y, w, h)
    except AnalysisError as exc:
        box, result = None, roi_alert(str(exc))
    try:
        if box:
            result = roi_result(cfg, image, box)
        if ctx.triggered_id == SLIDER:
            figure = image_panel(cfg, image, box)
        else:  # the box's outline only; the image stays
            figure = Patch()
            figure["layout"]["shapes"] = [ui.box_shape(box)] if box else []
    except PacsUnavailable:  # since the page was opened
        return (
            no_update,
            roi_alert("The PACS does not answer right now.", "danger"),
            *(no_update,) * 3,
        )
    except PacsError as exc:
        return (
            no_update,
            roi_alert(f"This image cannot be read: {exc}", "danger"),
            *(no_update,) * 3,
        )
    marker = Patch()
    marker["layout"]["shapes"] = [ui.current_image_line(image)]
    title = (
        f"Region of interest on image {image} / {len(cfg['images'])}"
        " (drag on the image to draw a box)"
    )
    return figure, result, marker, viewer_href(cfg, image), title
