"""The PACS contract every backend implements, and the factory that picks one.

Two backends stand behind :class:`Pacs`: :class:`services.orthanc.OrthancClient`
(a real Orthanc over its REST API) and :class:`services.embedded.EmbeddedStore`
(a folder of DICOM files, for running with no Orthanc). Both return the same
dataclasses with the same ids, so pages, the REST API and notebooks do not care
which one they talk to::

    from services.pacs import open_pacs
    pacs = open_pacs(dicom_dir="var/dicom")          # or orthanc_url=...
    study = pacs.find_studies()[0]
    series = pacs.list_series(study.study_uid)[0]
    images = pacs.list_images(study.study_uid, series.series_uid)
    hu = pacs.get_frame(images[0].instance_id, images[0].frame_index)
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .imaging import ImageFormat
from .models import ImageRef, InstanceMeta, SeriesSummary, StudySummary

# Series of these modalities carry no images: they are listed, never rendered.
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "PR", "KO", "DOC", "RTPLAN", "RTSTRUCT", "RTRECORD", "REG", "FID", "ECG"}
)


@dataclass(frozen=True)
class StudyQuery:
    """Search criteria; empty fields match everything.

    ``patient_name`` accepts DICOM wildcards (``*``, ``?``) and is matched
    without regard to case; dates are ``YYYYMMDD``.
    """

    patient_name: str = ""
    patient_id: str = ""
    date_from: str = ""
    date_to: str = ""
    modality: str = ""
    accession: str = ""
    limit: int = 100
    offset: int = 0


@runtime_checkable
class Pacs(Protocol):
    """Read access to a PACS. Frames are addressed by 0-based ``frame_index``."""

    name: str

    def ping(self) -> bool:
        """True when the backend answers."""
        ...

    def find_studies(self, query: StudyQuery = StudyQuery()) -> list[StudySummary]:
        """Studies matching ``query``, newest first."""
        ...

    def get_study(self, study_uid: str) -> StudySummary:
        """One study; raises ``NotFound``."""
        ...

    def list_series(self, study_uid: str) -> list[SeriesSummary]:
        """The study's series sorted by SeriesNumber (absent numbers last)."""
        ...

    def list_images(self, study_uid: str, series_uid: str) -> list[ImageRef]:
        """The series' images in display order (see ``imaging.display_order``)."""
        ...

    def series_images(self, study_uid: str) -> dict[str, list[ImageRef]]:
        """Every series of the study (in ``list_series`` order) with its images
        in display order, in one go (no images for SR and the like)."""
        ...

    def get_instance_meta(self, instance_id: str) -> InstanceMeta:
        """Geometry, window and rescale tags of one instance."""
        ...

    def get_instance_file(self, instance_id: str) -> bytes:
        """The instance's DICOM Part-10 file, byte for byte as stored."""
        ...

    def get_frame(self, instance_id: str, frame_index: int = 0) -> np.ndarray:
        """Pixels after the modality LUT: float32 (rows, cols) for grey images
        (Hounsfield units for CT), uint8 (rows, cols, 3) for colour."""
        ...

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
        """The frame windowed to 8 bits and encoded; ``size`` bounds the longer edge.
        Without a window, the instance's own (WindowCenter/Width) or its range."""
        ...


def series_sort_key(series: SeriesSummary) -> tuple:
    number = series.series_number if series.series_number is not None else 2**31
    return (number, series.series_uid)


def open_pacs(
    *,
    orthanc_url: str = "",
    orthanc_username: str = "",
    orthanc_password: str = "",
    dicom_dir: str | Path = "",
    cache_dir: str | Path = "",
    max_in_flight: int = 5,
    slot: Callable[[], AbstractContextManager[Any]] | None = None,
) -> Pacs:
    """Build the configured backend: Orthanc when ``orthanc_url`` is set, else
    the embedded store on ``dicom_dir``. ``slot`` wraps every request to
    Orthanc (a machine-wide cap such as ``coordination.SharedSlots``)."""
    if orthanc_url:
        from .orthanc import OrthancClient

        return OrthancClient(
            orthanc_url,
            username=orthanc_username,
            password=orthanc_password,
            cache_dir=cache_dir or None,
            max_in_flight=max_in_flight,
            slot=slot,
        )
    from .embedded import EmbeddedStore

    if not dicom_dir:
        raise ValueError("either orthanc_url or dicom_dir is required")
    index = Path(cache_dir) / "embedded-index.sqlite" if cache_dir else None
    return EmbeddedStore(dicom_dir, index_path=index)
