"""A first series viewer: one image at a time, slider, wheel and keys.

Opening it tells the bulk loader to load this series first, outward from the
image shown; moving through the series re-centres that priority. The images
are rendered by the server from its cache; the full viewer (raw pixels,
window/level, zoom, cine) replaces this view in issue #5.
"""

from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
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

from components.series_card import describe
from pages._shared import get_loader, get_pacs, valid_uid
from services.models import NotFound, PacsUnavailable

dash.register_page(
    __name__, path_template="/viewer/<study_uid>/<series_uid>", title="Viewer"
)


def frame_url(image) -> str:
    return (
        f"/api/pacs/instances/{image.instance_id}/frames/{image.frame_index + 1}"
        "/rendered?format=jpeg&quality=90"
    )


def layout(study_uid: str = "", series_uid: str = "", image: str = "1", **_query):
    if not (valid_uid(study_uid) and valid_uid(series_uid)):
        return dbc.Alert(
            "This is not a series address.", color="warning", id="viewer-error"
        )
    pacs = get_pacs()
    try:
        series = next(
            s for s in pacs.list_series(study_uid) if s.series_uid == series_uid
        )
        images = pacs.list_images(study_uid, series_uid)
    except (NotFound, StopIteration):
        return dbc.Alert(
            "No such series in the PACS.", color="warning", id="viewer-error"
        )
    except PacsUnavailable:
        return dbc.Alert(
            "The PACS does not answer right now.", color="danger", id="viewer-error"
        )
    if not images:
        return dbc.Alert(
            "This series has no images.", color="secondary", id="viewer-error"
        )
    start = min(max(int(image) if image.isdigit() else 1, 1), len(images))
    loader = get_loader()
    loader.prefetch(study_uid)
    loader.focus(study_uid, series_uid, start - 1)
    return html.Div(
        [
            html.Div(
                [
                    html.A(
                        "← Study", href=f"/study/{study_uid}", className="me-3 small"
                    ),
                    html.H5(
                        f"#{series.series_number} {describe(series)}",
                        className="mb-0 me-3",
                    ),
                    html.Span(
                        f"{start} / {len(images)}",
                        id="image-counter",
                        className="ms-auto font-monospace",
                    ),
                ],
                className="d-flex align-items-baseline mb-2",
            ),
            html.Div(
                html.Img(
                    id="viewer-image", src=frame_url(images[start - 1]), alt="image"
                ),
                id="viewer-viewport",
                tabIndex="0",
            ),
            dcc.Slider(
                id="viewer-slider",
                min=1,
                max=len(images),
                step=1,
                value=start,
                marks=None,
                tooltip={"placement": "bottom"},
                updatemode="drag",
                className="mt-2",
            ),
            dcc.Store(id="viewer-urls", data=[frame_url(i) for i in images]),
            dcc.Store(id="viewer-focus", data=start),
            dcc.Store(
                id="viewer-series", data={"study": study_uid, "series": series_uid}
            ),
        ]
    )


# Each step is handled in the browser: swap the image, update the counter,
# warm the browser cache with the neighbours (no server round trip per step).
clientside_callback(
    ClientsideFunction(namespace="viewer", function_name="show"),
    Output("viewer-image", "src"),
    Output("image-counter", "children"),
    Output("viewer-focus", "data"),
    Input("viewer-slider", "value"),
    State("viewer-urls", "data"),
    State("viewer-focus", "data"),
)


@callback(
    Output("viewer-series", "data"),
    Input("viewer-focus", "data"),
    State("viewer-series", "data"),
    prevent_initial_call=True,
)
def refocus(value, where):
    """Re-centre the bulk loader on the image shown (the browser sends this
    only every few images, never per step)."""
    if value:
        get_loader().focus(where["study"], where["series"], int(value) - 1)
    return dash.no_update
