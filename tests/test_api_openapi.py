"""The OpenAPI document (``api/openapi.py``) against the code it describes.

- every ``/api`` route of the Flask app is in the document with the same
  methods, and the document describes nothing else;
- ``GET /api/openapi.json`` serves the document, and it is valid OpenAPI;
- answers the fuzzer cannot provoke conform too: 503 (PACS down), 429, and the
  PNG/JPEG frames chosen with ``Accept`` (raw frames: size as the headers say);
- Schemathesis fuzzes every operation over WSGI (no network), signed in, on the
  embedded store with the test corpus: no answer may be a 5xx, and statuses,
  media types, headers and JSON bodies must conform to the document. The
  document served is copied with examples from the corpus (real study/series
  UIDs, instance ids, frame numbers, credentials) so the fuzzer reaches real
  data, broken images included, and not only 404s.
"""

from __future__ import annotations

import copy
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import SPEC
from services.pacs import StudyQuery
from settings import Settings

USER, PASSWORD = "fuzz", "fuzz-password-1"
# Flask rule variables -> the document's (PRD) path parameter names.
FLASK_TO_SPEC = {
    "study_uid": "studyUid",
    "series_uid": "seriesUid",
    "instance_id": "orthancId",
    "frame": "frameNumber",
}
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # added by Flask to every rule
MAX_EXAMPLES = 40
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CHECKS = [not_a_server_error, *CONFORMANCE]


@pytest.fixture(scope="module")
def make_server(dash_app, tmp_path_factory):
    """A factory of Flask servers (no Dash), each with its own files and a known
    user; their background loaders are stopped at the end.

    ``dash_app`` first: importing ``app`` builds the module-level Dash app from
    the environment, which that fixture sets up."""
    from app import create_server

    servers = []

    def make(**overrides):
        tmp = tmp_path_factory.mktemp("openapi")
        settings = {
            "dicom_dir": tmp / "dicom",
            "cache_dir": tmp / "cache",
            "users_db": tmp / "users.sqlite",
            "demo_study": False,
            "login_rate_limit": "10000 per minute",
            "api_rate_limit": "100000 per minute",
            "admin_username": USER,
            "admin_password": PASSWORD,
        }
        servers.append(create_server(Settings(**{**settings, **overrides})))
        return servers[-1]

    yield make
    for server in servers:
        loader = server.extensions.get("loader")
        if loader is not None:
            loader.stop()


@pytest.fixture(scope="module")
def openapi_server(make_server, corpus):
    """The server the document is checked and fuzzed against: the corpus."""
    return make_server(dicom_dir=corpus.root)


def sign_in(server) -> dict:
    answer = server.test_client().post(
        "/api/token/", json={"username": USER, "password": PASSWORD}
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()


def flask_api_routes(server) -> dict[str, set[str]]:
    """``/api`` rules as OpenAPI paths (``<study_uid>`` -> ``{studyUid}``)."""
    routes: dict[str, set[str]] = {}
    for rule in server.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or "_anything" in rule.arguments:
            continue
        path = re.sub(
            r"<(?:[^<>:]+:)?([^<>]+)>",
            lambda m: "{" + FLASK_TO_SPEC.get(m.group(1), m.group(1)) + "}",
            rule.rule,
        )
        routes.setdefault(path, set()).update(rule.methods - IGNORED_METHODS)
    return routes


def test_every_api_route_is_documented_and_nothing_else(openapi_server):
    documented = {
        path: {method.upper() for method in item}
        for path, item in SPEC["paths"].items()
    }
    assert flask_api_routes(openapi_server) == documented


def test_path_parameters_match_the_path_templates():
    for path, item in SPEC["paths"].items():
        in_template = set(re.findall(r"{([^}]+)}", path))
        for method, op in item.items():
            declared = {
                p["name"] for p in op.get("parameters", []) if p["in"] == "path"
            }
            assert declared == in_template, f"{method.upper()} {path}"


def test_openapi_json_serves_the_document_and_it_is_valid(openapi_server):
    answer = openapi_server.test_client().get("/api/openapi.json")  # no token
    assert answer.status_code == 200
    assert answer.mimetype == "application/json"
    assert answer.get_json() == SPEC
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", openapi_server)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    # every operation loads (Schemathesis leaves out the document's own URL)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} == {
        (method.upper(), path)
        for path, item in SPEC["paths"].items()
        for method in item
        if path != "/api/openapi.json"
    }


def conforms(server, path: str, method: str, response) -> None:
    """Check an answer the fuzzer cannot provoke (a 5xx on purpose, a 429)
    against the document: status, media type, headers and body."""
    schema = schemathesis.openapi.from_dict(copy.deepcopy(SPEC))
    schema.app = server
    case = schema[path][method].Case()
    case.validate_response(response, checks=CONFORMANCE)


def test_pacs_down_answers_the_documented_503(make_server):
    down = make_server(orthanc_url="http://127.0.0.1:9")  # the discard port
    token = sign_in(down)["access"]
    answer = down.test_client().get(
        "/api/pacs/studies/", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) > 0
    conforms(down, "/api/pacs/studies/", "GET", answer)


def test_rate_limit_answers_the_documented_429(make_server):
    limited = make_server(api_rate_limit="2 per minute")
    client = limited.test_client()
    answers = [client.get("/api/openapi.json") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[-1].headers["Retry-After"]) > 0
    conforms(limited, "/api/openapi.json", "GET", answers[-1])


def frame_urls(server) -> list[str]:
    """The first image of every series of the corpus with images (CT, MR,
    colour, multi-frame, every codec), broken ones left out."""
    pacs = server.extensions["pacs"]
    urls = []
    for study in pacs.find_studies(StudyQuery(limit=100)):
        if study.patient_id == "BROKEN":
            continue
        for series in pacs.list_series(study.study_uid):
            if series.image_count:
                first = pacs.list_images(study.study_uid, series.series_uid)[0]
                urls.append(
                    f"/api/pacs/instances/{first.instance_id}"
                    f"/frames/{first.frame_index + 1}"
                )
    return urls


@pytest.mark.parametrize(
    "accept, mimetype",
    [
        (None, "application/octet-stream"),
        ("*/*", "application/octet-stream"),
        ("image/png", "image/png"),
        ("image/jpeg", "image/jpeg"),
        ("image/png;q=0.9, application/octet-stream", "application/octet-stream"),
    ],
)
def test_frames_answer_the_documented_formats(
    openapi_server, access_token, accept, mimetype
):
    """``Accept`` is no OpenAPI parameter, so the fuzzer never asks for PNG or
    JPEG: each alternative here, on every kind of image, checked against the
    document; raw bodies have exactly the size the X-Image-* headers give."""
    headers = {"Authorization": f"Bearer {access_token}"}
    if accept:
        headers["Accept"] = accept
    client = openapi_server.test_client()
    path = "/api/pacs/instances/{orthancId}/frames/{frameNumber}"
    for url in frame_urls(openapi_server):
        answer = client.get(url, headers=headers)
        assert answer.status_code == 200, url
        assert answer.mimetype == mimetype, url
        conforms(openapi_server, path, "GET", answer)
        if mimetype == "application/octet-stream":
            itemsize = {"int16": 2, "float32": 4, "uint8": 1}
            expected = (
                int(answer.headers["X-Image-Rows"])
                * int(answer.headers["X-Image-Columns"])
                * int(answer.headers["X-Image-Samples"])
                * itemsize[answer.headers["X-Image-Dtype"]]
            )
            assert len(answer.get_data()) == expected, url
            assert (answer.headers["X-Image-Samples"] == "3") == (
                answer.headers["X-Image-Dtype"] == "uint8"
            ), url


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/token/", '{"username": "\\ud800", "password": "x"}'),
        ("/api/token/", '{"username": "fuzz", "password": "\\ud800"}'),
        ("/api/token/refresh/", '{"refresh": "\\ud800"}'),
        ("/api/token/revoke/", '{"refresh": "\\ud800"}'),
    ],
)
def test_lone_surrogates_in_token_bodies_are_client_errors(openapi_server, path, body):
    headers = {"Authorization": f"Bearer {sign_in(openapi_server)['access']}"}
    answer = openapi_server.test_client().post(
        path, data=body, content_type="application/json", headers=headers
    )
    assert answer.status_code < 500


# --- fuzzing -----------------------------------------------------------------


def corpus_examples(server) -> dict[str, list[tuple[str, object]]]:
    """Named example values of the path parameters, from the corpus. Values
    that belong together (a study and its series, an instance and one of its
    frames) share an example name, so Schemathesis puts them in one request."""
    pacs = server.extensions["pacs"]
    studies = pacs.find_studies(StudyQuery(limit=100))
    assert len(studies) >= 4
    study_uid, series_uid, orthanc_id, frame_number = [], [], [], []
    for s_index, study in enumerate(studies):
        study_uid.append((f"study{s_index}", study.study_uid))
        for r_index, series in enumerate(pacs.list_series(study.study_uid)):
            if series.image_count == 0:
                continue
            name = f"study{s_index}-series{r_index}"
            study_uid.append((name, study.study_uid))
            series_uid.append((name, series.series_uid))
            frames: dict[str, list[int]] = {}  # instance -> its frame numbers
            for image in pacs.list_images(study.study_uid, series.series_uid):
                frames.setdefault(image.instance_id, []).append(image.frame_index + 1)
            # two instances per series; the first and last frame of multi-frames
            for instance_id, numbers in list(frames.items())[:2]:
                for number in sorted({min(numbers), max(numbers)}):
                    name = f"{instance_id[:8]}-f{number}"
                    orthanc_id.append((name, instance_id))
                    frame_number.append((name, number))
    return {
        "studyUid": study_uid,
        "seriesUid": series_uid,
        "orthancId": orthanc_id,
        "frameNumber": frame_number,
    }


def with_examples(spec: dict, examples: dict, refresh_token: str) -> dict:
    """A copy of ``spec`` whose path parameters and token bodies carry examples."""
    spec = copy.deepcopy(spec)
    for item in spec["paths"].values():
        for op in item.values():
            for parameter in op.get("parameters", []):
                values = (
                    examples.get(parameter["name"])
                    if parameter["in"] == "path"
                    else None
                )
                if values:
                    parameter["examples"] = {
                        name: {"value": value} for name, value in values
                    }
    bodies = {
        "/api/token/": {
            "good": {"username": USER, "password": PASSWORD},
            "bad": {"username": USER, "password": "not-the-password"},
        },
        "/api/token/refresh/": {"good": {"refresh": refresh_token}},
    }
    for path, named in bodies.items():
        media = spec["paths"][path]["post"]["requestBody"]["content"][
            "application/json"
        ]
        media["examples"] = {name: {"value": value} for name, value in named.items()}
    return spec


@pytest.fixture(scope="module")
def api_schema(openapi_server):
    spec = with_examples(
        openapi_server.test_client().get("/api/openapi.json").get_json(),
        corpus_examples(openapi_server),
        sign_in(openapi_server)["refresh"],
    )
    schema = schemathesis.openapi.from_dict(spec)
    schema.app = openapi_server
    schema.config.generation.update(
        max_examples=MAX_EXAMPLES, deterministic=True, database="none"
    )
    return schema


@pytest.fixture(scope="module")
def access_token(openapi_server) -> str:
    return sign_in(openapi_server)["access"]


fuzzed = schemathesis.pytest.from_fixture("api_schema")


@fuzzed.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_fuzz_no_server_error_and_answers_conform(case, openapi_server, access_token):
    if case.operation.path == "/api/token/revoke/":
        token = sign_in(openapi_server)["access"]  # revoked by the call: never reuse it
    else:
        token = access_token
    # identity: the WSGI transport would not gunzip the larger JSON answers
    response = case.call(
        headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"}
    )
    case.validate_response(response, checks=CHECKS)
