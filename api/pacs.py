"""PACS endpoints under ``/api/pacs/`` (PRD "API Requirements"), all JWT-protected.

Every id and number is validated here before it reaches a backend; the
backends check again (defence in depth). Frame numbers are 1-based as in the
PRD (``frameNumber = frame_index + 1``).

Frame pixel format (``GET /api/pacs/instances/{orthancId}/frames/{frameNumber}``):
``application/octet-stream``, the frame's values after the modality LUT
(Hounsfield units for CT), row-major, little-endian; ``X-Image-Dtype`` says
``int16`` (integer values that fit), ``float32`` (others) or ``uint8`` (colour,
RGB interleaved, ``X-Image-Samples: 3``); ``X-Image-Rows``/``X-Image-Columns``
the shape; ``X-Window-Center``/``X-Window-Width`` the image's own window when it
has one. With ``Accept: image/png`` or ``image/jpeg`` the frame comes rendered
with that window instead. Pixel and DICOM answers carry an ETag and a long
private Cache-Control: instances never change.
"""

from __future__ import annotations

import logging
import re

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request
from flask_jwt_extended import jwt_required

from api import BadRequest
from api.turns import by_urgency, yield_to_urgent
from services import imaging
from services.imagecache import compact
from services.loader import BulkLoader, SeriesProgress, loader_stats
from services.models import DecodeError, ImageRef
from services.orthanc_ids import is_orthanc_id
from services.pacs import Pacs, StudyQuery

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
DATE_RE = re.compile(r"^[0-9]{8}$")
MAX_COUNT = 500
MAX_SIZE = 2048
MAX_BATCH = 32  # images per batch of frames: ~16 MB of 512 x 512 int16
IMMUTABLE = "private, max-age=31536000, immutable"
log = logging.getLogger(__name__)


def get_pacs() -> Pacs:
    return current_app.extensions["pacs"]


def get_loader() -> BulkLoader:
    return current_app.extensions["loader"]


def uid(value: str, what: str) -> str:
    if len(value) > 64 or not UID_RE.match(value):
        raise BadRequest(f"{what} is not a DICOM UID (digits and dots, at most 64)")
    return value


def orthanc_id(value: str) -> str:
    if not is_orthanc_id(value):
        raise BadRequest("orthancId is not an Orthanc id (5 groups of 8 hex digits)")
    return value


def integer(name: str, default: int, lo: int, hi: int, value: str | None = None) -> int:
    raw = request.args.get(name) if value is None else value
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise BadRequest(f"{name} must be a whole number")
    number = int(raw)
    if not lo <= number <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}")
    return number


def number(name: str) -> float | None:
    raw = request.args.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number") from None
    if not np.isfinite(value) or abs(value) > 1e6:
        raise BadRequest(f"{name} is out of range")
    return value


def frame_url(image: ImageRef) -> str:
    return f"/api/pacs/instances/{image.instance_id}/frames/{image.frame_index + 1}"


def progress_body(study_uid: str, progress: list[SeriesProgress]) -> Response:
    return jsonify(
        studyUid=study_uid,
        series=[p.as_json() for p in progress],
        complete=all(p.state == "complete" for p in progress),
    )


def geometry_headers(meta) -> dict[str, str]:
    """Where the frame lies, for a viewer's overlay (DICOM multi-values as ``a\\b``)."""
    out = {}
    for name, value in [
        ("X-Image-Position", meta.image_position),
        ("X-Pixel-Spacing", meta.pixel_spacing),
        ("X-Slice-Location", meta.slice_location),
        ("X-Slice-Thickness", meta.slice_thickness),
    ]:
        if value is not None:
            values = value if isinstance(value, tuple) else (value,)
            out[name] = "\\".join(f"{v:g}" for v in values)
    return out


def immutable(body: bytes, mimetype: str, etag: str, **headers: str) -> Response:
    response = Response(body, mimetype=mimetype, headers=headers)
    response.set_etag(etag)
    response.headers["Cache-Control"] = IMMUTABLE
    return response.make_conditional(request)


def raw_frame(instance_id: str, index: int) -> tuple[bytes, dict[str, str]]:
    """A frame's raw pixels and their ``X-*`` headers (the module docstring)."""
    yield_to_urgent()
    pacs = get_pacs()
    # the caching PACS keeps frames compact: no float32 copy and check again
    compact_frame = getattr(pacs, "get_frame_compact", None)
    if compact_frame is not None:
        data = compact_frame(instance_id, index)
    else:
        data = compact(pacs.get_frame(instance_id, index))
    meta = pacs.get_instance_meta(instance_id)
    headers = {
        "X-Image-Rows": str(data.shape[0]),
        "X-Image-Columns": str(data.shape[1]),
        "X-Image-Dtype": data.dtype.name,  # int16 | float32 | uint8
        "X-Image-Samples": str(data.shape[2] if data.ndim == 3 else 1),
        "X-Photometric": meta.photometric,
    }
    if data.ndim == 2 and data.size:  # the value range, for a viewer's window LUT
        headers["X-Pixel-Min"] = f"{data.min():g}"
        headers["X-Pixel-Max"] = f"{data.max():g}"
    if meta.window_center is not None and meta.window_width is not None:
        headers["X-Window-Center"] = f"{meta.window_center:g}"
        headers["X-Window-Width"] = f"{meta.window_width:g}"
    headers.update(geometry_headers(meta))
    return data.tobytes(), headers


def multipart_frames(
    parts: list[tuple[str, bytes, dict[str, str]]], boundary: str
) -> bytes:
    """``parts`` (url, body, headers) as a multipart/related body whose parts
    name their frame (``Content-Location``) and their length."""
    chunks = []
    for url, body, headers in parts:
        head = {
            "Content-Type": "application/octet-stream",
            "Content-Location": url,
            "Content-Length": str(len(body)),
            **headers,
        }
        lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
        chunks += [f"--{boundary}\r\n{lines}\r\n".encode(), body, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks)


def register(bp: Blueprint) -> None:
    @bp.get("/pacs/studies/")
    @jwt_required()
    def studies():
        args = request.args
        for key in ("dateFrom", "dateTo"):
            if args.get(key) and not DATE_RE.match(args[key]):
                raise BadRequest(f"{key} must be YYYYMMDD")
        limit = integer("limit", 50, 1, MAX_COUNT)
        offset = integer("offset", 0, 0, 10**6)
        query = StudyQuery(
            patient_name=args.get("patientName", "")[:64],
            patient_id=args.get("patientId", "")[:64],
            date_from=args.get("dateFrom", ""),
            date_to=args.get("dateTo", ""),
            modality=args.get("modality", "")[:16],
            accession=args.get("accession", "")[:16],
            limit=limit + 1,  # one more tells whether there is a next page
            offset=offset,
        )
        found = get_pacs().find_studies(query)
        return jsonify(
            studies=[
                {
                    "studyUid": s.study_uid,
                    "orthancId": s.study_id,
                    "patientName": s.patient_name,
                    "patientId": s.patient_id,
                    "studyDate": s.study_date,
                    "studyDescription": s.study_description,
                    "accessionNumber": s.accession_number,
                    "modalities": list(s.modalities),
                    "seriesCount": s.series_count,
                    "imageCount": s.image_count,
                }
                for s in found[:limit]
            ],
            limit=limit,
            offset=offset,
            hasMore=len(found) > limit,
        )

    @bp.get("/pacs/studies/<study_uid>/series/")
    @jwt_required()
    def series(study_uid: str):
        pacs = get_pacs()
        study_uid = uid(study_uid, "studyUid")
        out = []
        for s in pacs.list_series(study_uid):
            if s.image_count == 0:
                continue  # SR, PR and other series without images
            first = pacs.list_images(study_uid, s.series_uid)[0]
            out.append(
                {
                    "seriesUid": s.series_uid,
                    "seriesNumber": s.series_number,
                    "seriesDescription": s.series_description,
                    "imageCount": s.image_count,
                    "modality": s.modality,
                    "firstImageUrl": frame_url(first),
                }
            )
        return jsonify(series=out)

    @bp.get("/pacs/studies/<study_uid>/series/<series_uid>/images/bulk")
    @jwt_required()
    def bulk(study_uid: str, series_uid: str):
        study_uid, series_uid = uid(study_uid, "studyUid"), uid(series_uid, "seriesUid")
        start = integer("start", 0, 0, 10**6)
        count = integer("count", 50, 1, MAX_COUNT)
        images = get_pacs().list_images(study_uid, series_uid)
        page = images[start : start + count]
        return jsonify(
            images=[
                {
                    "imageNumber": i.image_number,
                    "imageUrl": frame_url(i),
                    "instanceUid": i.instance_uid,
                    "frameNumber": i.frame_index + 1,
                    "orthancId": i.instance_id,
                }
                for i in page
            ],
            totalImages=len(images),
            hasMore=start + count < len(images),
        )

    @bp.get("/pacs/studies/<study_uid>/series/<series_uid>/images/frames")
    @jwt_required()
    @by_urgency
    def bulk_frames(study_uid: str, series_uid: str):
        """Raw pixels of several images of a series in one answer (request
        batching): the same bytes and headers as each image's frame URL, one
        multipart part each. An image that cannot be decoded is left out (its
        own URL says why); none decoded: 422."""
        study_uid, series_uid = uid(study_uid, "studyUid"), uid(series_uid, "seriesUid")
        start = integer("start", 0, 0, 10**6)
        count = integer("count", 16, 1, MAX_BATCH)
        images = get_pacs().list_images(study_uid, series_uid)[start : start + count]
        if not images:
            raise BadRequest("start is past the series' last image")
        parts = []
        for image in images:
            try:
                body, headers = raw_frame(image.instance_id, image.frame_index)
            except DecodeError as exc:
                log.warning("left out of a batch: %s", exc)
                continue
            parts.append((frame_url(image), body, headers))
        if not parts:  # (a multipart body has at least one part)
            raise DecodeError(
                f"images {start + 1}-{start + len(images)}", "none decodes"
            )
        boundary = f"frames-{start}-{len(images)}"
        response = Response(multipart_frames(parts, boundary))
        response.headers["Content-Type"] = (
            f'multipart/related; type="application/octet-stream"; boundary={boundary}'
        )
        response.headers["Cache-Control"] = "private, no-store"
        return response

    @bp.get("/pacs/studies/<study_uid>/image-ids/")
    @jwt_required()
    def image_ids(study_uid: str):
        pacs = get_pacs()
        study_uid = uid(study_uid, "studyUid")
        ids = []
        for s in pacs.list_series(study_uid):
            if s.image_count == 0:
                continue
            images = pacs.list_images(study_uid, s.series_uid)
            multiframe = {i.instance_id for i in images if i.frame_index > 0}
            for i in images:
                url = f"wadouri:/api/pacs/instances/{i.instance_id}/file"
                ids.append(
                    f"{url}?frame={i.frame_index}"
                    if i.instance_id in multiframe
                    else url
                )
        return jsonify(imageIds=ids, total=len(ids))

    @bp.post("/pacs/studies/<study_uid>/prefetch/")
    @jwt_required()
    def prefetch(study_uid: str):
        """Start (or re-check) the bulk load of every image of the study."""
        study_uid = uid(study_uid, "studyUid")
        return progress_body(study_uid, get_loader().prefetch(study_uid)), 202

    @bp.get("/pacs/studies/<study_uid>/progress/")
    @jwt_required()
    def progress(study_uid: str):
        study_uid = uid(study_uid, "studyUid")
        return progress_body(study_uid, get_loader().progress(study_uid))

    @bp.get("/loader/stats")
    @jwt_required()
    def stats():
        ext = current_app.extensions
        return jsonify(loader_stats(ext["pacs"], ext["loader"], ext.get("slots")))

    @bp.get("/pacs/instances/<instance_id>/file")
    @jwt_required()
    def instance_file(instance_id: str):
        instance_id = orthanc_id(instance_id)
        body = get_pacs().get_instance_file(instance_id)
        return immutable(
            body,
            "application/dicom",
            f"file-{instance_id}",
            **{"Content-Disposition": f'attachment; filename="{instance_id}.dcm"'},
        )

    @bp.get("/pacs/instances/<instance_id>/dicomweb")
    @jwt_required()
    def instance_dicomweb(instance_id: str):
        """The instance as a WADO-RS answer: multipart/related, one application/dicom part."""
        instance_id = orthanc_id(instance_id)
        body = get_pacs().get_instance_file(instance_id)
        boundary = f"dicom-{instance_id}"
        payload = (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
            + body
            + f"\r\n--{boundary}--\r\n".encode()
        )
        response = immutable(payload, "multipart/related", f"dicomweb-{instance_id}")
        response.headers["Content-Type"] = (
            f'multipart/related; type="application/dicom"; boundary={boundary}'
        )
        return response

    def load_frame(instance_id: str, frame: str) -> tuple[str, int]:
        instance_id = orthanc_id(instance_id)
        frame_number = integer("frameNumber", 1, 1, 100_000, value=frame)
        return instance_id, frame_number - 1

    @bp.get("/pacs/instances/<instance_id>/frames/<frame>")
    @jwt_required()
    @by_urgency
    def frame_pixels(instance_id: str, frame: str):
        instance_id, index = load_frame(instance_id, frame)
        accept = request.accept_mimetypes
        best = accept.best_match(
            ["application/octet-stream", "image/png", "image/jpeg"]
        )
        if (
            best in ("image/png", "image/jpeg")
            and accept[best] > accept["application/octet-stream"]
        ):
            fmt = "png" if best == "image/png" else "jpeg"
            yield_to_urgent()
            body = get_pacs().render_frame(instance_id, index, fmt=fmt)
            response = immutable(
                body, imaging.MIME[fmt], f"{instance_id}-{index}-{fmt}"
            )
            response.vary.add("Accept")
            return response
        body, headers = raw_frame(instance_id, index)
        response = immutable(
            body, "application/octet-stream", f"{instance_id}-{index}-raw", **headers
        )
        response.vary.add("Accept")
        return response

    @bp.get("/pacs/instances/<instance_id>/frames/<frame>/rendered")
    @jwt_required()
    @by_urgency
    def frame_rendered(instance_id: str, frame: str):
        instance_id, index = load_frame(instance_id, frame)
        center, width = number("windowCenter"), number("windowWidth")
        if (center is None) != (width is None):
            raise BadRequest("give both windowCenter and windowWidth, or neither")
        if width is not None and width <= 0:
            raise BadRequest("windowWidth must be positive")
        size = integer("size", 0, 0, MAX_SIZE) or None
        quality = integer("quality", 90, 1, 100)
        fmt = imaging.FORMATS.get(request.args.get("format", "png").lower())
        if fmt is None:
            raise BadRequest("format must be png or jpeg")
        yield_to_urgent()
        body = get_pacs().render_frame(
            instance_id,
            index,
            center=center,
            width=width,
            size=size,
            fmt=fmt,
            quality=quality,
        )
        key = f"{instance_id}-{index}-{center}-{width}-{size}-{fmt}-{quality}"
        return immutable(body, imaging.MIME[fmt], key)
