"""``GET /api/openapi.json``: the OpenAPI 3.1 description of every endpoint.

:data:`SPEC` is a plain dict, written by hand next to the code it describes
(:mod:`api.tokens`, :mod:`api.pacs`, the error handlers in :mod:`api`); the
helpers below only remove repetition. ``tests/test_api_openapi.py`` checks that
every route of the blueprint is described (and nothing else), and fuzzes the
server with Schemathesis against this document: statuses, media types, headers
and JSON bodies must all conform.

Conventions: path parameters use the PRD's camelCase names (``studyUid``,
``seriesUid``, ``orthancId``, ``frameNumber``) where the Flask rules say
``study_uid`` etc.; every error is ``{"error": code, "message": text}``.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
ORTHANC_ID_PATTERN = r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$"
DATE_PATTERN = r"^[0-9]{8}$"
MAX_COUNT = 500  # api.pacs.MAX_COUNT
MAX_BATCH = 32  # api.pacs.MAX_BATCH
MAX_SIZE = 2048  # api.pacs.MAX_SIZE
MAX_FRAME = 100_000


# --- helpers ---------------------------------------------------------------


def ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def schema(name: str) -> dict:
    return ref("schemas", name)


def string(description: str = "", **extra) -> dict:
    return {
        "type": "string",
        **({"description": description} if description else {}),
        **extra,
    }


def integer(minimum: int | None = None, maximum: int | None = None, **extra) -> dict:
    out: dict = {"type": "integer"}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    return {**out, **extra}


def obj(**properties: dict) -> dict:
    """A closed JSON object whose properties are all required."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def param(where: str, name: str, schema_: dict, description: str, **extra) -> dict:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema_,
        **extra,
    }


def query(name: str, schema_: dict, description: str) -> dict:
    return param("query", name, schema_, description)


def json_response(description: str, body: dict, headers: dict | None = None) -> dict:
    out: dict = {
        "description": description,
        "content": {"application/json": {"schema": body}},
    }
    if headers:
        out["headers"] = headers
    return out


def binary(*media_types: str) -> dict:
    """A ``content`` map of opaque binary bodies."""
    return {
        mt: {"schema": {"type": "string", "contentMediaType": mt}} for mt in media_types
    }


def errors(*codes: int) -> dict:
    """The shared error responses (``components/responses``) for ``codes``."""
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        404: "NotFound",
        422: "Undecodable",
        429: "TooManyRequests",
        502: "PacsError",
        503: "PacsUnavailable",
    }
    return {str(code): ref("responses", names[code]) for code in codes}


def operation(
    operation_id: str,
    summary: str,
    description: str,
    responses: dict,
    *,
    tags: tuple[str, ...] = ("PACS",),
    parameters: list | None = None,
    security: list | None = None,
    request_body: dict | None = None,
) -> dict:
    out: dict = {
        "operationId": operation_id,
        "tags": list(tags),
        "summary": summary,
        "description": description,
    }
    if parameters:
        out["parameters"] = parameters
    if request_body:
        out["requestBody"] = request_body
    if security is not None:
        out["security"] = security
    out["responses"] = responses
    return out


def json_body(body: dict, *, required: bool, description: str) -> dict:
    return {
        "required": required,
        "description": description,
        "content": {"application/json": {"schema": body}},
    }


# --- reusable parts --------------------------------------------------------

STUDY_UID = param(
    "path",
    "studyUid",
    string("StudyInstanceUID", pattern=UID_PATTERN, maxLength=64),
    "The study's DICOM StudyInstanceUID (digits and dots, at most 64 characters).",
)
SERIES_UID = param(
    "path",
    "seriesUid",
    string("SeriesInstanceUID", pattern=UID_PATTERN, maxLength=64),
    "The series' DICOM SeriesInstanceUID (digits and dots, at most 64 characters).",
)
FIRST_IMAGE = query("start", integer(0, 10**6, default=0), "0-based first image.")
ORTHANC_ID = param(
    "path",
    "orthancId",
    string("Orthanc instance id", pattern=ORTHANC_ID_PATTERN),
    "The instance's Orthanc id: the SHA-1 of its patient/study/series/instance "
    "UIDs, five dash-separated groups of eight lower-case hex digits. Both "
    "backends use the same ids.",
)
FRAME_NUMBER = param(
    "path",
    "frameNumber",
    integer(1, MAX_FRAME),
    "1-based frame number within the instance (1 for single-frame images).",
)
IF_NONE_MATCH = param(
    "header",
    "If-None-Match",
    {"type": "string"},
    "An ETag from an earlier answer: a match answers 304 without a body.",
)

IMMUTABLE_HEADERS = {
    "ETag": {
        "description": "Identifies this representation; instances never change.",
        "required": True,
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": "`private, max-age=31536000, immutable`.",
        "required": True,
        "schema": {"type": "string"},
    },
}
NOT_MODIFIED = {
    "description": "`If-None-Match` matched the ETag: the cached copy is current.",
    "headers": IMMUTABLE_HEADERS,
}
RAW_FRAME_HEADERS = {
    "X-Image-Rows": {
        "description": "Rows of the frame (raw pixels only).",
        "schema": integer(1),
    },
    "X-Image-Columns": {
        "description": "Columns of the frame (raw pixels only).",
        "schema": integer(1),
    },
    "X-Image-Dtype": {
        "description": "Sample type of the raw pixels: `int16` (integer values "
        "that fit), `float32` (others) or `uint8` (colour).",
        "schema": {"type": "string", "enum": ["int16", "float32", "uint8"]},
    },
    "X-Image-Samples": {
        "description": "Samples per pixel: 1 (grey) or 3 (RGB, interleaved).",
        "schema": {"type": "integer", "enum": [1, 3]},
    },
    "X-Photometric": {
        "description": "The DICOM PhotometricInterpretation (e.g. `MONOCHROME2`).",
        "schema": {"type": "string"},
    },
    "X-Window-Center": {
        "description": "The image's own window centre, when it has one.",
        "schema": {"type": "number"},
    },
    "X-Window-Width": {
        "description": "The image's own window width, when it has one.",
        "schema": {"type": "number"},
    },
    "X-Pixel-Min": {
        "description": "Smallest value in a grey frame (raw pixels only).",
        "schema": {"type": "number"},
    },
    "X-Pixel-Max": {
        "description": "Largest value in a grey frame (raw pixels only).",
        "schema": {"type": "number"},
    },
    "X-Image-Position": {
        "description": "Image Position (Patient) in mm, `x\\y\\z`, when known.",
        "schema": {"type": "string"},
    },
    "X-Pixel-Spacing": {
        "description": "Pixel Spacing in mm, `row\\column`, when known.",
        "schema": {"type": "string"},
    },
    "X-Slice-Location": {
        "description": "Slice Location in mm, when known.",
        "schema": {"type": "number"},
    },
    "X-Slice-Thickness": {
        "description": "Slice Thickness in mm, when known.",
        "schema": {"type": "number"},
    },
}
PIXELS_DESCRIPTION = """\
The frame's pixels, by default raw: `application/octet-stream`, the values
after the modality LUT (Hounsfield units for CT), row-major, little-endian.
`X-Image-Dtype` gives the sample type: `int16` when every value is an integer
in -32768..32767, `float32` otherwise, `uint8` for colour (RGB interleaved,
`X-Image-Samples: 3`); `X-Image-Rows` and `X-Image-Columns` give the shape, so
the body is rows x columns x samples x sizeof(dtype) bytes. `X-Window-Center`
and `X-Window-Width` carry the image's own window when it has one.

With `Accept: image/png` or `Accept: image/jpeg` (preferred over
`application/octet-stream`) the frame comes rendered to 8 bits with that
window instead (or its value range), like `.../rendered` without parameters.
Answers carry an ETag and a long private Cache-Control (`Vary: Accept`).

A `Priority` request header (RFC 9218, `u=0`..`u=7`) says how urgent the
request is: while one of `u=0` or `u=1` is answered, those of `u=4` or more
wait before decoding (at most 250 ms)."""

# --- the document ----------------------------------------------------------

PACS_ERRORS = (400, 401, 404, 429, 502, 503)
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "required": True,
        "schema": integer(0),
    }
}

SPEC: dict = {
    "openapi": "3.1.0",
    "info": {
        "title": "CT/MR Viewer API",
        "version": "1",
        "description": (
            "JSON and binary endpoints of the CT/MR viewer, in front of Orthanc "
            "or the embedded DICOM store. Every `/api/pacs/` endpoint needs a JWT "
            "access token: `Authorization: Bearer <access>` (API clients) or the "
            "`access_token_cookie` cookie set by the login page (the browser; "
            "state-changing requests then also need the `X-CSRF-TOKEN` header). "
            'Every error answer is JSON `{"error": code, "message": text}`; '
            "unknown `/api/...` paths answer a JSON 404. JSON answers of 1 KiB "
            "or more are gzip-compressed for clients that send "
            "`Accept-Encoding: gzip`. Answers carry the rate limiter's "
            "`X-RateLimit-*` headers; over the limit, 429 with `Retry-After`."
        ),
    },
    "tags": [
        {"name": "Authentication", "description": "JWT access and refresh tokens."},
        {"name": "PACS", "description": "Studies, series, images and pixels."},
        {"name": "Meta", "description": "This document."},
    ],
    "security": [{"bearerAuth": []}, {"cookieAuth": []}],
    "paths": {
        "/api/token/": {
            "post": operation(
                "obtainToken",
                "Sign in: exchange a username and password for tokens",
                "Answers an access token (short-lived, for every PACS call) and a "
                "refresh token (for `/api/token/refresh/`). Rate-limited per "
                "client address (the login limit).",
                {
                    "200": json_response("Signed in.", schema("TokenPair")),
                    **errors(400, 401, 429),
                },
                tags=("Authentication",),
                security=[],
                request_body=json_body(
                    schema("Credentials"), required=True, description="The credentials."
                ),
            )
        },
        "/api/token/refresh/": {
            "post": operation(
                "refreshToken",
                "A new access token from a refresh token",
                'The refresh token comes in the JSON body (`{"refresh": ...}`) '
                "or, for the browser, in the `refresh_token_cookie` cookie with "
                "its CSRF value in `X-CSRF-TOKEN`; the cookie way also sets the "
                "new access token's cookie. A revoked, expired or non-refresh "
                "token, or a removed user, answers 401.",
                {
                    "200": json_response("A new access token.", schema("AccessToken")),
                    **errors(400, 401, 429),
                },
                tags=("Authentication",),
                security=[{}, {"refreshCookie": [], "csrfHeader": []}],
                request_body=json_body(
                    schema("RefreshRequest"),
                    required=False,
                    description="The refresh token; leave out to use the cookie.",
                ),
            )
        },
        "/api/token/revoke/": {
            "post": operation(
                "revokeToken",
                "Sign out: revoke the presented token (and a refresh token)",
                "Revokes the token that authenticates this request (access or "
                "refresh) and, when the body names one of the same user, that "
                "refresh token too. Revoked tokens answer 401 from then on.",
                {
                    "200": json_response("Revoked.", schema("Revoked")),
                    **errors(400, 401, 429),
                },
                tags=("Authentication",),
                security=[
                    {"bearerAuth": []},
                    {"cookieAuth": [], "csrfHeader": []},
                    {"refreshCookie": [], "csrfHeader": []},
                ],
                request_body=json_body(
                    schema("RefreshRequest"),
                    required=False,
                    description="Optionally, the refresh token to revoke too.",
                ),
            )
        },
        "/api/pacs/studies/": {
            "get": operation(
                "findStudies",
                "Search studies",
                "Studies matching every given filter (empty filters match "
                "everything), newest first, one page at a time.",
                {
                    "200": json_response("One page of studies.", schema("StudyPage")),
                    **errors(*PACS_ERRORS),
                },
                parameters=[
                    query(
                        "patientName",
                        string(),
                        "PatientName; DICOM wildcards `*` and `?`, any case. "
                        "Only the first 64 characters are used.",
                    ),
                    query("patientId", string(), "PatientID (first 64 characters)."),
                    query(
                        "dateFrom",
                        string(pattern=DATE_PATTERN),
                        "Earliest StudyDate, `YYYYMMDD`.",
                    ),
                    query(
                        "dateTo",
                        string(pattern=DATE_PATTERN),
                        "Latest StudyDate, `YYYYMMDD`.",
                    ),
                    query(
                        "modality",
                        string(),
                        "A modality in the study, e.g. `CT` (first 16 characters).",
                    ),
                    query(
                        "accession",
                        string(),
                        "AccessionNumber (first 16 characters).",
                    ),
                    query(
                        "limit",
                        integer(1, MAX_COUNT, default=50),
                        "Studies per page.",
                    ),
                    query(
                        "offset",
                        integer(0, 10**6, default=0),
                        "Studies to skip.",
                    ),
                ],
            )
        },
        "/api/pacs/studies/{studyUid}/series/": {
            "get": operation(
                "listSeries",
                "The study's image series",
                "Series with at least one image (SR, PR and other series without "
                "images are left out), sorted by SeriesNumber (absent numbers "
                "last). `firstImageUrl` is the raw-pixels URL of the series' "
                "first image in display order.",
                {
                    "200": json_response("The series.", schema("SeriesList")),
                    **errors(*PACS_ERRORS),
                },
                parameters=[STUDY_UID],
            )
        },
        "/api/pacs/studies/{studyUid}/series/{seriesUid}/images/bulk": {
            "get": operation(
                "listImages",
                "One page of a series' images, in display order",
                "Every frame of every instance is one image (`frameNumber` is "
                "1-based). `hasMore` says whether images follow this page.",
                {
                    "200": json_response("One page of images.", schema("ImagePage")),
                    **errors(*PACS_ERRORS),
                },
                parameters=[
                    STUDY_UID,
                    SERIES_UID,
                    FIRST_IMAGE,
                    query(
                        "count",
                        integer(1, MAX_COUNT, default=50),
                        "Images per page.",
                    ),
                ],
            )
        },
        "/api/pacs/studies/{studyUid}/series/{seriesUid}/images/frames": {
            "get": operation(
                "getFramesBatch",
                "Raw pixels of several images of a series in one answer",
                "Request batching for clients that load a series: images `start` "
                "to `start + count - 1` of `images/bulk`'s order as "
                '`multipart/related; type="application/octet-stream"`, one part '
                "per image with `Content-Location` (the image's `imageUrl`), "
                "`Content-Length` and the `X-Image-*`/`X-Window-*` headers of "
                "that URL's raw answer, whose bytes it holds. An image that "
                "cannot be decoded is left out (its own URL answers 422; 422 "
                "here when none can be): a client falls back to single-image "
                "requests for what is missing. `start` past the series' end: 400.",
                {
                    "200": {
                        "description": "The frames, one part each.",
                        "content": binary("multipart/related"),
                    },
                    **errors(*PACS_ERRORS, 422),
                },
                parameters=[
                    STUDY_UID,
                    SERIES_UID,
                    FIRST_IMAGE,
                    query(
                        "count",
                        integer(1, MAX_BATCH, default=16),
                        "Images in this answer.",
                    ),
                ],
            )
        },
        "/api/pacs/studies/{studyUid}/image-ids/": {
            "get": operation(
                "listImageIds",
                "Cornerstone image ids of every image of the study",
                "`wadouri:` ids of the DICOM files, series by series in display "
                "order; frames of multi-frame instances as `...?frame=<0-based>`.",
                {
                    "200": json_response("The image ids.", schema("ImageIds")),
                    **errors(*PACS_ERRORS),
                },
                parameters=[STUDY_UID],
            )
        },
        "/api/pacs/studies/{studyUid}/prefetch/": {
            "post": operation(
                "prefetchStudy",
                "Start the bulk load of every image of the study",
                "Queues every image into the server-side cache (idempotent: an "
                "image already cached is not fetched again) and answers at once "
                "with the current progress; poll `progress/` to watch it.",
                {
                    "202": json_response(
                        "Queued; the progress so far.", schema("StudyProgress")
                    ),
                    **errors(*PACS_ERRORS),
                },
                parameters=[STUDY_UID],
            )
        },
        "/api/pacs/studies/{studyUid}/progress/": {
            "get": operation(
                "studyProgress",
                "Bulk-load progress of the study, per image series",
                "`loaded` counts images in the server-side cache; `failed` those "
                "that could not be fetched or decoded (their image numbers in "
                "`failedImages`); `state` is queued, loading, waiting (the PACS "
                "does not answer; loading resumes by itself), error or complete.",
                {
                    "200": json_response("The progress.", schema("StudyProgress")),
                    **errors(*PACS_ERRORS),
                },
                parameters=[STUDY_UID],
            )
        },
        "/api/loader/stats": {
            "get": operation(
                "loaderStats",
                "What the bulk loader and the PACS connection are doing",
                "Requests to the PACS per second, in flight now and the most seen, "
                "the cap, cache hit rate, megabytes fetched and cached, images queued.",
                {
                    "200": json_response("The figures.", schema("LoaderStats")),
                    **errors(401, 429),
                },
                tags=("Loader",),
            )
        },
        "/api/pacs/instances/{orthancId}/file": {
            "get": operation(
                "getInstanceFile",
                "The instance's DICOM file",
                "The DICOM Part-10 file byte for byte as stored, as an attachment.",
                {
                    "200": {
                        "description": "The DICOM file.",
                        "headers": {
                            **IMMUTABLE_HEADERS,
                            "Content-Disposition": {
                                "description": 'attachment; filename="<orthancId>.dcm"',
                                "required": True,
                                "schema": {"type": "string"},
                            },
                        },
                        "content": binary("application/dicom"),
                    },
                    "304": NOT_MODIFIED,
                    **errors(*PACS_ERRORS),
                },
                parameters=[ORTHANC_ID, IF_NONE_MATCH],
            )
        },
        "/api/pacs/instances/{orthancId}/dicomweb": {
            "get": operation(
                "getInstanceDicomweb",
                "The instance as a DICOMweb (WADO-RS) answer",
                '`multipart/related; type="application/dicom"; '
                "boundary=dicom-<orthancId>` with one `application/dicom` part: "
                "the stored file.",
                {
                    "200": {
                        "description": "One-part multipart/related answer.",
                        "headers": IMMUTABLE_HEADERS,
                        "content": binary("multipart/related"),
                    },
                    "304": NOT_MODIFIED,
                    **errors(*PACS_ERRORS),
                },
                parameters=[ORTHANC_ID, IF_NONE_MATCH],
            )
        },
        "/api/pacs/instances/{orthancId}/frames/{frameNumber}": {
            "get": operation(
                "getFramePixels",
                "One frame's pixels (raw), or rendered with `Accept`",
                PIXELS_DESCRIPTION,
                {
                    "200": {
                        "description": "The frame: raw pixels, or PNG/JPEG per `Accept`.",
                        "headers": {**IMMUTABLE_HEADERS, **RAW_FRAME_HEADERS},
                        "content": binary(
                            "application/octet-stream", "image/png", "image/jpeg"
                        ),
                    },
                    "304": NOT_MODIFIED,
                    **errors(*PACS_ERRORS, 422),
                },
                parameters=[ORTHANC_ID, FRAME_NUMBER, IF_NONE_MATCH],
            )
        },
        "/api/pacs/instances/{orthancId}/frames/{frameNumber}/rendered": {
            "get": operation(
                "getFrameRendered",
                "One frame rendered to PNG or JPEG",
                "The frame windowed to 8 bits and encoded. Without "
                "`windowCenter`/`windowWidth` (give both or neither) the image's "
                "own window is used, else its value range; `size` bounds the "
                "longer edge (0 or absent: the frame's own size).",
                {
                    "200": {
                        "description": "The rendered frame.",
                        "headers": IMMUTABLE_HEADERS,
                        "content": binary("image/png", "image/jpeg"),
                    },
                    "304": NOT_MODIFIED,
                    **errors(*PACS_ERRORS, 422),
                },
                parameters=[
                    ORTHANC_ID,
                    FRAME_NUMBER,
                    query(
                        "windowCenter",
                        {"type": "number", "minimum": -1e6, "maximum": 1e6},
                        "Window centre (in modality units, e.g. HU); with `windowWidth`.",
                    ),
                    query(
                        "windowWidth",
                        {"type": "number", "exclusiveMinimum": 0, "maximum": 1e6},
                        "Window width, positive; with `windowCenter`.",
                    ),
                    query(
                        "size",
                        integer(0, MAX_SIZE, default=0),
                        "Longest edge in pixels; 0 keeps the frame's size.",
                    ),
                    query(
                        "format",
                        {
                            "type": "string",
                            "enum": ["png", "jpeg", "jpg"],
                            "default": "png",
                        },
                        "Encoding (`jpg` is `jpeg`; any case).",
                    ),
                    query(
                        "quality",
                        integer(1, 100, default=90),
                        "JPEG quality.",
                    ),
                    IF_NONE_MATCH,
                ],
            )
        },
        "/api/openapi.json": {
            "get": operation(
                "getOpenApi",
                "This OpenAPI document",
                "The OpenAPI 3.1 description of every `/api` endpoint.",
                {
                    "200": json_response("The document.", {"type": "object"}),
                    **errors(429),
                },
                tags=("Meta",),
                security=[],
            )
        },
    },
    "components": {
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token from `POST /api/token/` (HS256).",
            },
            "cookieAuth": {
                "type": "apiKey",
                "in": "cookie",
                "name": "access_token_cookie",
                "description": "The access token in an httpOnly cookie, set by the "
                "login page (`POST /login`).",
            },
            "refreshCookie": {
                "type": "apiKey",
                "in": "cookie",
                "name": "refresh_token_cookie",
                "description": "The refresh token in an httpOnly cookie, set by the "
                "login page.",
            },
            "csrfHeader": {
                "type": "apiKey",
                "in": "header",
                "name": "X-CSRF-TOKEN",
                "description": "Double-submit CSRF value: the `csrf_access_token` "
                "(or `csrf_refresh_token`) cookie's value; required with cookie "
                "authentication on POST.",
            },
        },
        "schemas": {
            "Error": obj(
                error=string(
                    "Machine-readable code, e.g. `bad_request`, `unauthorized`, "
                    "`not_found`, `undecodable`, `too_many_requests`, "
                    "`pacs_unavailable`, `pacs_error`."
                ),
                message=string("Human-readable explanation."),
            ),
            "Credentials": obj(
                username=string("The user's name."),
                password=string("The user's password."),
            ),
            "TokenPair": obj(
                access=string("JWT access token."),
                refresh=string("JWT refresh token."),
            ),
            "AccessToken": obj(
                access=string("JWT access token."),
            ),
            "RefreshRequest": {
                "type": "object",
                "properties": {"refresh": string("JWT refresh token.")},
            },
            "Revoked": obj(revoked={"type": "boolean", "const": True}),
            "Study": obj(
                studyUid=string("StudyInstanceUID, as stored in the PACS."),
                orthancId=string("Orthanc study id.", pattern=ORTHANC_ID_PATTERN),
                patientName=string("PatientName (DICOM PN, `^` separated)."),
                patientId=string("PatientID."),
                studyDate=string("StudyDate as stored: `YYYYMMDD`, or empty."),
                studyDescription=string("StudyDescription, or empty."),
                accessionNumber=string("AccessionNumber, or empty."),
                modalities={
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Modalities of the study's series.",
                },
                seriesCount=integer(0),
                imageCount=integer(0, description="Frames over every series."),
            ),
            "StudyPage": obj(
                studies={"type": "array", "items": schema("Study")},
                limit=integer(1, MAX_COUNT),
                offset=integer(0),
                hasMore={"type": "boolean", "description": "Another page follows."},
            ),
            "Series": obj(
                seriesUid=string("SeriesInstanceUID, as stored in the PACS."),
                seriesNumber={
                    "type": ["integer", "null"],
                    "description": "SeriesNumber; null when absent.",
                },
                seriesDescription=string("SeriesDescription; empty when absent."),
                imageCount=integer(1, description="Frames in the series."),
                modality=string("e.g. `CT`, `MR`."),
                firstImageUrl=string(
                    "Raw pixels of the first image: "
                    "`/api/pacs/instances/{orthancId}/frames/{frameNumber}`.",
                    pattern=r"^/api/pacs/instances/[0-9a-f-]{44}/frames/[0-9]+$",
                ),
            ),
            "SeriesList": obj(series={"type": "array", "items": schema("Series")}),
            "Image": obj(
                imageNumber=integer(
                    1, description="1-based position in display order."
                ),
                imageUrl=string(
                    "Raw pixels: `/api/pacs/instances/{orthancId}/frames/{frameNumber}`.",
                    pattern=r"^/api/pacs/instances/[0-9a-f-]{44}/frames/[0-9]+$",
                ),
                instanceUid=string("SOPInstanceUID."),
                frameNumber=integer(1, description="1-based frame in the instance."),
                orthancId=string("Orthanc instance id.", pattern=ORTHANC_ID_PATTERN),
            ),
            "ImagePage": obj(
                images={"type": "array", "items": schema("Image")},
                totalImages=integer(0, description="Images in the whole series."),
                hasMore={"type": "boolean", "description": "Images follow this page."},
            ),
            "SeriesProgress": obj(
                seriesUid=string(),
                loaded=integer(0),
                total=integer(0),
                failed=integer(0),
                failedImages={"type": "array", "items": integer(1)},
                state={
                    "type": "string",
                    "enum": ["queued", "loading", "waiting", "error", "complete"],
                },
                error=string(),
            ),
            "StudyProgress": obj(
                studyUid=string(),
                series={"type": "array", "items": schema("SeriesProgress")},
                complete={"type": "boolean"},
            ),
            "LoaderStats": obj(
                requests_per_s={"type": "number"},
                in_flight=integer(0),
                in_flight_max=integer(0),
                cap={
                    "type": ["integer", "string"],
                    "description": "The cap, or a note when there is no PACS to cap.",
                },
                hit_rate=string(),
                fetched_mb={"type": "number"},
                cache_mb={"type": "number"},
                queue=integer(0),
                images_per_s={"type": "number"},
            ),
            "ImageIds": obj(
                imageIds={
                    "type": "array",
                    "items": string(
                        pattern=r"^wadouri:/api/pacs/instances/[0-9a-f-]{44}/file"
                        r"(\?frame=[0-9]+)?$"
                    ),
                },
                total=integer(0),
            ),
        },
        "responses": {
            "BadRequest": json_response(
                "Invalid input (a malformed id, number, date or body).",
                schema("Error"),
            ),
            "Unauthorized": json_response(
                "Missing, invalid, expired or revoked token, or wrong credentials.",
                schema("Error"),
            ),
            "NotFound": json_response(
                "No such study, series, instance or frame.", schema("Error")
            ),
            "Undecodable": json_response(
                "The image's pixel data cannot be decoded.", schema("Error")
            ),
            "TooManyRequests": json_response(
                "Over the rate limit.",
                schema("Error"),
                headers=RETRY_AFTER,
            ),
            "PacsError": json_response(
                "The PACS refused the request.", schema("Error")
            ),
            "PacsUnavailable": json_response(
                "The PACS does not answer (down, timing out, circuit open).",
                schema("Error"),
                headers=RETRY_AFTER,
            ),
        },
    },
}


def register(bp: Blueprint) -> None:
    @bp.get("/openapi.json")
    def openapi():
        return jsonify(SPEC)
