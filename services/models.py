"""Plain data returned by every PACS backend, and the errors they raise.

Ids: ``*_uid`` are DICOM UIDs; ``*_id`` are Orthanc ids (SHA-1 of the UIDs, see
:mod:`services.orthanc_ids`), identical whichever backend serves the data.
Frames are addressed by a 0-based ``frame_index`` everywhere in ``services``;
the REST API's 1-based ``frameNumber`` is ``frame_index + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StudySummary:
    study_uid: str
    study_id: str
    patient_name: str
    patient_id: str
    study_date: str  # YYYYMMDD or ""
    study_description: str
    accession_number: str
    modalities: tuple[str, ...]
    series_count: int
    image_count: int  # frames, over every series


@dataclass(frozen=True)
class SeriesSummary:
    series_uid: str
    series_id: str
    study_uid: str
    series_number: int | None
    series_description: str  # "" when the tag is absent
    modality: str
    image_count: int  # frames: a multi-frame instance counts once per frame
    instance_count: int


@dataclass(frozen=True)
class ImageRef:
    """One displayable image: one frame of one instance."""

    image_number: int  # 1-based position in display order
    instance_id: str
    instance_uid: str
    frame_index: int  # 0-based


@dataclass(frozen=True)
class InstanceMeta:
    """What a viewer needs to show and annotate one instance."""

    instance_id: str
    instance_uid: str
    rows: int
    columns: int
    number_of_frames: int
    photometric: str
    modality: str
    window_center: float | None
    window_width: float | None
    rescale_slope: float
    rescale_intercept: float
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    slice_location: float | None
    image_position: tuple[float, float, float] | None
    image_orientation: tuple[float, ...] | None
    frame_time_ms: float | None
    extra: dict[str, str] = field(default_factory=dict)


class PacsError(Exception):
    """Base class of every error a PACS backend raises on purpose."""


class NotFound(PacsError):
    """The study, series, instance or frame does not exist."""


class PacsUnavailable(PacsError):
    """The PACS does not answer (down, timing out, or circuit breaker open)."""


class DecodeError(PacsError):
    """Pixel data could not be decoded; the message names the file and reason."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"cannot decode {source}: {reason}")
        self.source = source
        self.reason = reason
