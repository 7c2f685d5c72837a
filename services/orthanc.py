"""A PACS backend on a real Orthanc server, through its REST API.

Everything goes through one pooled ``requests`` session (a requests-cache
``CachedSession`` when a cache folder is given) with timeouts and
``urllib3.Retry`` (exponential backoff with jitter on 429/502/503/504 and on
a 500 that is not Orthanc's own error, honouring ``Retry-After``). A
:class:`~services.breaker.CircuitBreaker` stops calls while Orthanc is down,
and a semaphore keeps at most ``max_in_flight`` requests (5 by default) in
flight from this process.

# Developer notes
- The in-flight limit is a pluggable context manager (``slot``): this process
  uses a threading semaphore; a deployment-wide limit plugs in the same way.
- Only immutable answers are cached for long (instance tags); study and series
  listings for a few seconds, since new instances can arrive.
- Orthanc answers 500 with its own JSON error when one file cannot be decoded:
  that is a :class:`DecodeError` of that instance, not an outage, so it does not
  count against the circuit breaker.
- Ids and UIDs are checked before they go into a URL, so nothing a client sends
  can reach another Orthanc route.
"""

from __future__ import annotations

import io
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from . import imaging, orthanc_ids
from .breaker import CircuitBreaker
from .imaging import ImageFormat, SliceKey
from .models import (
    DecodeError,
    ImageRef,
    InstanceMeta,
    NotFound,
    PacsError,
    PacsUnavailable,
    SeriesSummary,
    StudySummary,
)
from .pacs import NON_IMAGE_MODALITIES, StudyQuery, series_sort_key

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
# Orthanc's own error names (the "OrthancError" of its JSON error bodies)
NOT_IMPLEMENTED = "Not implemented yet"  # e.g. a codec its decoder lacks
OUT_OF_RANGE = "Parameter out of range"  # e.g. a frame past the last
# Pixel data gains little from gzip, and Orthanc compressing every file cost
# 5x the time of a plain transfer on 2 cores (bench/RESULTS.md): ask for none.
# JSON answers stay compressed.
BINARY = {"Accept-Encoding": "identity"}
META_CACHE_SIZE = 4096
# np.load parses .npy headers with ast.literal_eval, which CPython 3.11 can
# fail under concurrent threads ("AST constructor recursion depth mismatch").
NPY_LOCK = threading.Lock()
LISTING_TTL = 3.0  # seconds a study's listing is reused within this process  # instances whose tags are kept in memory
FIND_LIMIT = 1000  # studies fetched from /tools/find before sorting and paging


class OrthancRefused(PacsError):
    """Orthanc answered, but with an error about this resource (4xx/5xx + its JSON)."""

    def __init__(self, what: str, status: int, error: dict[str, str]) -> None:
        self.what, self.status, self.error = what, status, error
        detail = error.get("Details") or error.get("OrthancError") or ""
        super().__init__(f"Orthanc refused {what}: HTTP {status} {detail}".rstrip())


class JitterRetry(Retry):
    """``Retry`` with full jitter on the exponential backoff, so that many
    clients retrying at once do not come back in step (urllib3 1.26 has no
    ``backoff_jitter``; the test extras pin it).

    A bare HTTP 500 (from a gateway or proxy on the way) is retried too, but
    not Orthanc's own JSON error: that one says the request itself cannot
    succeed (a file it cannot decode), and asking again would only repeat it.
    """

    def get_backoff_time(self) -> float:
        return random.uniform(0, super().get_backoff_time())

    def increment(self, method=None, url=None, response=None, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        if (
            response is not None
            and response.status == 500
            and "json" in (response.headers.get("Content-Type") or "")
        ):
            raise MaxRetryError(kwargs.get("_pool"), url or "", "Orthanc error")
        return super().increment(method, url, response, *args, **kwargs)


def check_uid(uid: str) -> str:
    if not (0 < len(uid) <= 64 and UID_RE.match(uid)):
        raise NotFound(f"not a DICOM UID: {uid[:80]!r}")
    return uid


def check_id(orthanc_id: str) -> str:
    if not orthanc_ids.is_orthanc_id(orthanc_id):
        raise NotFound(f"not an Orthanc id: {orthanc_id[:80]!r}")
    return orthanc_id


def _frames(tags: dict[str, Any], modality: str) -> int:
    if modality in NON_IMAGE_MODALITIES:
        return 0
    return imaging.parse_int(tags.get("NumberOfFrames")) or 1


class OrthancClient:
    """A :class:`services.pacs.Pacs` on an Orthanc server.

    Parameters
    ----------
    url
        Orthanc's base URL, e.g. ``http://127.0.0.1:8042``.
    username, password
        HTTP basic credentials (empty for none).
    session
        A ready session to use instead of building one.
    timeout
        ``(connect, read)`` seconds for every request.
    cache_dir
        Folder for the HTTP metadata cache (no cache when None).
    max_in_flight
        Requests allowed in flight at once from this process.
    retries, backoff
        ``urllib3.Retry`` total and backoff factor (seconds).
    breaker
        A circuit breaker; one opening after 5 failures for 10 s by default.
    slot
        Context-manager factory wrapping every request (the in-flight limit).
    """

    name = "orthanc"

    def __init__(
        self,
        url: str,
        *,
        username: str = "",
        password: str = "",
        session: requests.Session | None = None,
        timeout: tuple[float, float] = (3.05, 60.0),
        cache_dir: str | Path | None = None,
        max_in_flight: int = 5,
        retries: int = 3,
        backoff: float = 0.25,
        breaker: CircuitBreaker | None = None,
        slot: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> None:
        # Credentials in the URL (http://user:pw@host) move to the session, so
        # that no message or log line ever shows them.
        parts = urlsplit(url.rstrip("/"))
        if parts.username and not username:
            username, password = unquote(parts.username), unquote(parts.password or "")
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        self.timeout = timeout
        self.session = session or self._build_session(
            cache_dir, max_in_flight, retries, backoff
        )
        if username:
            self.session.auth = (username, password)
        self._direct_headers: dict[str, str] | None = None  # see _get_binary
        if session is None:
            self._settle_environment(parts.scheme)
        self._direct_timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])
        self._url_path = parts.path.rstrip("/")
        default_port = {"http": 80, "https": 443}.get(parts.scheme)
        self._origin = (parts.hostname or "", parts.port or default_port, parts.scheme)
        self.breaker = breaker or CircuitBreaker(f"Orthanc at {self.url}")
        semaphore = threading.BoundedSemaphore(max_in_flight)
        self._slot = slot or (lambda: semaphore)
        self._count_lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.requests_sent = 0  # answered by Orthanc (not by the HTTP cache)
        self.cache_hits = 0
        self._meta: dict[str, InstanceMeta] = {}
        self._ids: dict[tuple[str, str], str] = {}  # (UID, level) -> Orthanc id
        # study id -> (time, listing): one page view lists a study several
        # ways (summary, series, images); a short memo makes that one listing
        self._listings: dict[str, tuple[float, list]] = {}
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="orthanc-listing")

    @staticmethod
    def _build_session(
        cache_dir: str | Path | None, pool: int, retries: int, backoff: float
    ) -> requests.Session:
        session: requests.Session
        if cache_dir:
            import requests_cache

            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            session = requests_cache.CachedSession(
                str(Path(cache_dir) / "orthanc-http"),
                backend="sqlite",
                expire_after=requests_cache.DO_NOT_CACHE,
                urls_expire_after={
                    "*/instances/*/simplified-tags": requests_cache.NEVER_EXPIRE,
                    "*/studies/*": 5,
                    "*/series/*": 5,
                },
                allowable_methods=("GET",),
                wal=True,  # readers never wait for the writer (many threads)
                busy_timeout=30_000,
            )
        else:
            session = requests.Session()
        retry = JitterRetry(
            total=retries,
            backoff_factor=backoff,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=None,  # Orthanc's POST /tools/* are read-only lookups
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(
            max_retries=retry, pool_connections=1, pool_maxsize=pool, pool_block=True
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def _settle_environment(self, scheme: str) -> None:
        """Read what requests takes from the environment (proxies, CA bundle,
        ~/.netrc) once, here, and stop the session reading it again on every
        call (``trust_env``; a few tenths of a millisecond each)."""
        settings = self.session.merge_environment_settings(
            self.url, {}, None, None, None
        )
        if self.session.auth is None:
            self.session.auth = requests.utils.get_netrc_auth(self.url)
        self.session.proxies.update(settings["proxies"])
        self.session.verify = settings["verify"]
        self.session.trust_env = False
        if scheme == "http" and not settings["proxies"]:
            headers = {
                "User-Agent": requests.utils.default_user_agent(),
                "Accept": "*/*",
                "Connection": "keep-alive",
                **BINARY,
            }
            if isinstance(self.session.auth, tuple):
                user, pw = self.session.auth
                headers.update(urllib3.util.make_headers(basic_auth=f"{user}:{pw}"))
            if self.session.auth is None or isinstance(self.session.auth, tuple):
                self._direct_headers = headers

    # -- transport -------------------------------------------------------------

    @contextmanager
    def _counted(self) -> Iterator[None]:
        with self._slot():
            with self._count_lock:
                self.in_flight += 1
                self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
            try:
                yield
            finally:
                with self._count_lock:
                    self.in_flight -= 1

    def _request(
        self, method: str, path: str, what: str, **kwargs: Any
    ) -> requests.Response:
        """Send one request; map failures to the PACS errors."""
        self.breaker.before_call()
        try:
            with self._counted():
                resp = self.session.request(
                    method, self.url + path, timeout=self.timeout, **kwargs
                )
        except requests.RequestException as exc:
            raise self._down(exc) from exc
        with self._count_lock:
            if getattr(resp, "from_cache", False):
                self.cache_hits += 1
            else:
                self.requests_sent += 1
        self._settle(resp.status_code, what, lambda: _orthanc_error(resp))
        return resp

    def _get_binary(self, path: str, what: str) -> bytes:
        """GET a binary answer (an instance file), uncompressed.

        Through urllib3's pool of the session's own adapter: the same
        connections, ``Retry`` and timeouts as :meth:`_request`, without the
        per-call work of requests and requests-cache (preparing, merging
        settings, a cache key for an answer never cached), a large part of
        the bulk loader's CPU per image. A session given to the constructor,
        a proxy or HTTPS go through :meth:`_request` instead."""
        if self._direct_headers is None:
            return self._request("GET", path, what, headers=BINARY).content
        url = self.url + path
        adapter = self.session.get_adapter(url)
        self.breaker.before_call()
        try:
            with self._counted():
                # by host, not by URL: urlopen parses the path again anyway
                pool = adapter.poolmanager.connection_from_host(*self._origin)
                resp = pool.urlopen(
                    "GET",
                    self._url_path + path,  # origin form, as requests sends
                    headers=self._direct_headers,
                    retries=adapter.max_retries,
                    timeout=self._direct_timeout,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=True,
                )
        except urllib3.exceptions.HTTPError as exc:
            raise self._down(exc) from exc
        with self._count_lock:
            self.requests_sent += 1

        def error() -> dict[str, str]:
            if "json" not in (resp.headers.get("Content-Type") or ""):
                return {}
            try:
                return _error_body(json.loads(resp.data))
            except ValueError:
                return {}

        self._settle(resp.status, what, error)
        return resp.data

    def _down(self, exc: Exception) -> PacsUnavailable:
        reason = f"{type(exc).__name__} talking to Orthanc"
        self.breaker.record_failure(reason)
        return PacsUnavailable(f"Orthanc at {self.url} does not answer: {reason}")

    def _settle(
        self, status: int, what: str, error: Callable[[], dict[str, str]]
    ) -> None:
        """Map an answer's status to the PACS errors (and the breaker)."""
        if status in (429, 502, 503, 504) or (status >= 500 and not error()):
            self.breaker.record_failure(f"HTTP {status}")
            raise PacsUnavailable(
                f"Orthanc at {self.url} answered HTTP {status} for {what}"
            )
        self.breaker.record_success()
        if status in (401, 403):
            raise PacsUnavailable(
                f"Orthanc at {self.url} refused the credentials (HTTP {status})"
            )
        if status == 404:
            raise NotFound(f"{what} not found")
        if status >= 400:
            raise OrthancRefused(what, status, error())

    def _json(self, path: str, what: str, **kwargs: Any) -> Any:
        return self._request("GET", path, what, **kwargs).json()

    def _lookup(self, uid: str, level: str) -> str:
        """The Orthanc id of a study or series UID (``NotFound`` if absent).

        A UID's id never changes: found ones are remembered (bounded)."""
        known = self._ids.get((uid, level))
        if known:
            return known
        answers = self._request(
            "POST", "/tools/lookup", f"{level} {uid}", data=check_uid(uid)
        ).json()
        for answer in answers:
            if answer.get("Type") == level:
                if len(self._ids) >= META_CACHE_SIZE:
                    self._ids.clear()
                self._ids[(uid, level)] = answer["ID"]
                return answer["ID"]
        raise NotFound(f"{level.lower()} {uid} not found")

    # -- Pacs ------------------------------------------------------------------

    def ping(self) -> bool:
        try:
            self._json("/system", "system")
            return True
        except PacsError:
            return False

    def find_studies(self, query: StudyQuery = StudyQuery()) -> list[StudySummary]:
        dicom_query: dict[str, str] = {}
        if query.patient_name:
            dicom_query["PatientName"] = query.patient_name
        if query.patient_id:
            dicom_query["PatientID"] = query.patient_id
        if query.accession:
            dicom_query["AccessionNumber"] = query.accession
        if query.modality:
            dicom_query["ModalitiesInStudy"] = query.modality
        if query.date_from or query.date_to:
            dicom_query["StudyDate"] = f"{query.date_from}-{query.date_to}"
        answers = self._request(
            "POST",
            "/tools/find",
            "study search",
            json={
                "Level": "Study",
                "Query": dicom_query,
                "Expand": True,
                "Limit": FIND_LIMIT,
            },
        ).json()
        # newest first, then by UID: the embedded store's order
        answers.sort(key=lambda a: a["MainDicomTags"].get("StudyInstanceUID", ""))
        answers.sort(
            key=lambda a: a["MainDicomTags"].get("StudyDate", ""), reverse=True
        )
        page = answers[query.offset : query.offset + query.limit]
        return [self._study_summary(a) for a in page]

    def _study_summary(self, study: dict[str, Any]) -> StudySummary:
        series = self.list_series(
            study["MainDicomTags"]["StudyInstanceUID"], study_id=study["ID"]
        )
        tags, patient = study["MainDicomTags"], study.get("PatientMainDicomTags", {})
        return StudySummary(
            study_uid=tags["StudyInstanceUID"],
            study_id=study["ID"],
            patient_name=patient.get("PatientName", "").rstrip(),
            patient_id=patient.get("PatientID", "").rstrip(),
            study_date=tags.get("StudyDate", "").rstrip(),
            study_description=tags.get("StudyDescription", "").rstrip(),
            accession_number=tags.get("AccessionNumber", "").rstrip(),
            modalities=tuple(sorted({s.modality for s in series if s.modality})),
            series_count=len(series),
            image_count=sum(s.image_count for s in series),
        )

    def get_study(self, study_uid: str) -> StudySummary:
        study_id = self._lookup(study_uid, "Study")
        study = self._pool.submit(
            self._json, f"/studies/{study_id}", f"study {study_uid}"
        )
        self._study_listing(study_uid, study_id)  # meanwhile; the summary needs it
        return self._study_summary(study.result())

    def _study_listing(
        self, study_uid: str, study_id: str | None = None
    ) -> list[tuple[SeriesSummary, list[dict[str, Any]]]]:
        """The study's series (sorted) with their instances: two requests,
        reused for ``LISTING_TTL`` seconds."""
        study_id = study_id or self._lookup(study_uid, "Study")
        memo = self._listings.get(study_id)
        if memo and time.monotonic() - memo[0] < LISTING_TTL:
            return memo[1]
        listing = self._fetch_listing(study_uid, study_id)
        if len(self._listings) >= 256:
            self._listings.clear()
        self._listings[study_id] = (time.monotonic(), listing)
        return listing

    def _fetch_listing(
        self, study_uid: str, study_id: str
    ) -> list[tuple[SeriesSummary, list[dict[str, Any]]]]:
        # the two listings at once: a study page waits for them
        what = f"study {study_uid}"
        pending = self._pool.submit(self._json, f"/studies/{study_id}/series", what)
        instances = self._json(f"/studies/{study_id}/instances", what)
        series = pending.result()
        by_series: dict[str, list[dict[str, Any]]] = {}
        for inst in instances:
            by_series.setdefault(inst["ParentSeries"], []).append(inst)
        out = []
        for s in series:
            tags = s["MainDicomTags"]
            modality = tags.get("Modality", "").rstrip()
            members = by_series.get(s["ID"], [])
            summary = SeriesSummary(
                series_uid=tags["SeriesInstanceUID"],
                series_id=s["ID"],
                study_uid=study_uid,
                series_number=imaging.parse_int(tags.get("SeriesNumber")),
                series_description=tags.get("SeriesDescription", "").rstrip(),
                modality=modality,
                image_count=sum(_frames(i["MainDicomTags"], modality) for i in members),
                instance_count=len(members),
            )
            out.append((summary, members))
        return sorted(out, key=lambda pair: series_sort_key(pair[0]))

    def list_series(
        self, study_uid: str, *, study_id: str | None = None
    ) -> list[SeriesSummary]:
        return [s for s, _ in self._study_listing(study_uid, study_id)]

    def series_images(self, study_uid: str) -> dict[str, list[ImageRef]]:
        return {
            s.series_uid: _display_order(members, s.modality)
            for s, members in self._study_listing(study_uid)
        }

    def list_images(self, study_uid: str, series_uid: str) -> list[ImageRef]:
        series_id = self._lookup(series_uid, "Series")
        series = self._json(f"/series/{series_id}", f"series {series_uid}")
        parent = self._json(f"/studies/{series['ParentStudy']}", f"study {study_uid}")
        if parent["MainDicomTags"].get("StudyInstanceUID") != study_uid:
            raise NotFound(f"series {series_uid} not found in study {study_uid}")
        modality = series["MainDicomTags"].get("Modality", "").rstrip()
        instances = self._json(f"/series/{series_id}/instances", f"series {series_uid}")
        return _display_order(instances, modality)

    def get_instance_meta(self, instance_id: str) -> InstanceMeta:
        # Instances never change: remember their tags (bounded, most recent kept).
        with self._count_lock:
            meta = self._meta.pop(instance_id, None)
            if meta is not None:
                self._meta[instance_id] = meta
                return meta
        tags = self._json(
            f"/instances/{check_id(instance_id)}/simplified-tags",
            f"instance {instance_id}",
        )
        meta = imaging.meta_from_tags(instance_id, tags)
        with self._count_lock:
            self._meta[instance_id] = meta
            while len(self._meta) > META_CACHE_SIZE:
                self._meta.pop(next(iter(self._meta)))
        return meta

    def get_instance_file(self, instance_id: str) -> bytes:
        return self._get_binary(
            f"/instances/{check_id(instance_id)}/file", f"instance {instance_id}"
        )

    def _frame_path(self, instance_id: str, frame_index: int) -> str:
        if frame_index < 0:
            raise NotFound(f"instance {instance_id} has no frame {frame_index + 1}")
        return f"/instances/{check_id(instance_id)}/frames/{int(frame_index)}"

    def get_frame(self, instance_id: str, frame_index: int = 0) -> np.ndarray:
        what = f"frame {frame_index + 1} of instance {instance_id}"
        # rescale=0: Orthanc's own rescale rounds to whole numbers; apply it here
        path = self._frame_path(instance_id, frame_index) + "/numpy?rescale=0"
        try:
            resp = self._request("GET", path, what, headers=BINARY)
        except OrthancRefused as exc:
            if exc.error.get("OrthancError") == OUT_OF_RANGE:
                raise NotFound(f"{what}: the instance has no such frame") from exc
            if exc.error.get("OrthancError") != NOT_IMPLEMENTED:
                raise DecodeError(what, str(exc)) from exc
            # Orthanc 1.10's /numpy only uses its built-in decoder (no JPEG 2000
            # even with the GDCM plugin): decode the stored file here instead.
            dicom = io.BytesIO(self.get_instance_file(instance_id))
            return imaging.decode_frame(dicom, frame_index, what)
        with NPY_LOCK:  # np.load's header parsing is not thread-safe on 3.11
            pixels = np.load(io.BytesIO(resp.content), allow_pickle=False)
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        if pixels.ndim == 3:
            return pixels.astype(np.uint8, copy=False)
        meta = self.get_instance_meta(instance_id)
        hu = pixels.astype(np.float64) * meta.rescale_slope + meta.rescale_intercept
        return hu.astype(np.float32)

    def render_frame(
        self,
        instance_id: str,
        frame_index: int = 0,
        *,
        center: float | None = None,
        width: float | None = None,
        size: int | None = None,
        fmt: ImageFormat = "png",
        quality: int = 90,
    ) -> bytes:
        meta = self.get_instance_meta(instance_id)
        pixels = self.get_frame(instance_id, frame_index)
        return imaging.render(pixels, meta, center, width, fmt, size, quality)


def _display_order(instances: list[dict[str, Any]], modality: str) -> list[ImageRef]:
    keys = []
    for i in instances:
        tags = i["MainDicomTags"]
        keys.append(
            SliceKey(
                instance_id=i["ID"],
                instance_uid=tags.get("SOPInstanceUID", ""),
                instance_number=imaging.parse_int(tags.get("InstanceNumber")),
                image_position=imaging.parse_floats(tags.get("ImagePositionPatient")),  # type: ignore[arg-type]
                image_orientation=imaging.parse_floats(
                    tags.get("ImageOrientationPatient")
                ),
                number_of_frames=_frames(tags, modality),
            )
        )
    return imaging.display_order(keys)


def _orthanc_error(resp: requests.Response) -> dict[str, str]:
    """Orthanc's own JSON error, or {} when the body is not one."""
    try:
        return _error_body(resp.json())
    except ValueError:
        return {}


def _error_body(body: Any) -> dict[str, str]:
    if isinstance(body, dict) and "OrthancError" in body:
        return {k: str(v) for k, v in body.items()}
    return {}
