"""Image maths shared by every backend: display order, windowing, rendering.

Both PACS backends feed the same functions, so the order of a series and the
8-bit rendering of a frame do not depend on where the pixels came from.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, iter_pixels
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from .models import DecodeError, ImageRef, InstanceMeta, NotFound

ImageFormat = Literal["png", "jpeg"]
FORMATS: dict[str, ImageFormat] = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg"}
MIME = {"png": "image/png", "jpeg": "image/jpeg"}


@dataclass(frozen=True)
class SliceKey:
    """The tags that decide where an instance sits in its series."""

    instance_id: str
    instance_uid: str
    instance_number: int | None
    image_position: tuple[float, float, float] | None
    image_orientation: tuple[float, ...] | None
    number_of_frames: int


def parse_floats(value: object) -> tuple[float, ...] | None:
    """Parse a DICOM multi-valued decimal ("a\\\\b\\\\c" or a list) into floats."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return (float(value),)
    items = value.split("\\") if isinstance(value, str) else list(value)  # type: ignore[arg-type]
    try:
        return tuple(float(v) for v in items)
    except (TypeError, ValueError):
        return None


def parse_int(value: object) -> int | None:
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        return None


def display_order(slices: Sequence[SliceKey]) -> list[ImageRef]:
    """Order a series for display and number its images from 1.

    Instances are sorted by the projection of ImagePositionPatient on the slice
    normal (cross product of the first instance's orientation vectors), then by
    InstanceNumber, then by SOPInstanceUID; instances without geometry sort by
    InstanceNumber after those with it. Each frame of a multi-frame instance is
    one image, in frame order; instances without frames give no image.
    """
    normal = None
    for s in slices:
        if s.image_orientation and len(s.image_orientation) == 6:
            row, col = (
                np.array(s.image_orientation[:3]),
                np.array(s.image_orientation[3:]),
            )
            n = np.cross(row, col)
            if np.linalg.norm(n) > 0:
                normal = n / np.linalg.norm(n)
                break

    nx, ny, nz = (float(v) for v in normal) if normal is not None else (0, 0, 0)

    def key(s: SliceKey) -> tuple:
        if normal is not None and s.image_position and len(s.image_position) == 3:
            x, y, z = s.image_position  # plain floats: np.dot per slice cost ~5x
            geometry: tuple = (0, round(nx * x + ny * y + nz * z, 4))
        else:
            geometry = (1, 0.0)
        number = s.instance_number if s.instance_number is not None else 2**31
        return (*geometry, number, s.instance_uid)

    images: list[ImageRef] = []
    for s in sorted(slices, key=key):
        for frame in range(s.number_of_frames):  # 0 for SR, PR and the like
            images.append(
                ImageRef(len(images) + 1, s.instance_id, s.instance_uid, frame)
            )
    return images


def decode_frames(
    source: Path | io.BytesIO | Dataset,
    name: str,
    indices: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Decode frames of a DICOM file with pydicom (and the pylibjpeg plugins).

    Each frame is what :meth:`services.pacs.Pacs.get_frame` promises: float32
    after the modality LUT for grey images, uint8 RGB for colour. ``indices``
    picks frames (all when None). ``source`` may be the file already parsed
    whole (a ``Dataset``: no second parse). Raises ``NotFound`` for a frame
    the file does not have and ``DecodeError`` (naming ``name``) for anything
    the decoders cannot read.
    """
    try:
        parsed = isinstance(source, Dataset)
        header = source if parsed else pydicom.dcmread(source, stop_before_pixels=True)
        count = parse_int(header.get("NumberOfFrames")) or 1
        wanted = list(range(count)) if indices is None else list(indices)
        missing = [i for i in wanted if not 0 <= i < count]
        if missing:
            raise NotFound(f"{name} has {count} frame(s); no frame {missing[0] + 1}")
        if isinstance(source, io.BytesIO):
            source.seek(0)
        syntax = header.file_meta.get("TransferSyntaxUID")
        # pydicom cannot inflate a file while streaming it: read it whole then
        src = (
            pydicom.dcmread(source)
            if syntax == DeflatedExplicitVRLittleEndian and not parsed
            else source
        )
        frames = list(iter_pixels(src, indices=wanted))
    except NotFound:
        raise
    except Exception as exc:  # every decoder failure becomes one typed error
        raise DecodeError(name, f"{type(exc).__name__}: {exc}") from exc
    return [
        frame.astype(np.uint8, copy=False)  # colour: RGB (pydicom converts YBR)
        if frame.ndim == 3
        else np.asarray(apply_modality_lut(frame, header), dtype=np.float32)
        for frame in frames
    ]


def decode_frame(
    source: Path | io.BytesIO | Dataset, frame_index: int, name: str
) -> np.ndarray:
    """One frame of a DICOM file (see :func:`decode_frames`)."""
    return decode_frames(source, name, [frame_index])[0]


NATIVE = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)


def native_frame(ds: Dataset, frame_index: int) -> np.ndarray | None:
    """One frame of a file parsed whole, read straight from its pixel data
    when it is plain (uncompressed little endian, grey, 16 bits allocated, a
    whole-number intercept and slope 1, int16 after it): the int16 that
    :func:`decode_frame` then ``compact`` give, in a fifth of the time. None
    for any other file (:func:`decode_frame` reads it)."""
    if ds.file_meta.get("TransferSyntaxUID") not in NATIVE or "PixelData" not in ds:
        return None
    if parse_int(ds.get("SamplesPerPixel")) not in (None, 1):
        return None
    if parse_int(ds.get("BitsAllocated")) != 16 or "ModalityLUTSequence" in ds:
        return None
    slope = parse_floats(ds.get("RescaleSlope")) or (1.0,)
    intercept = (parse_floats(ds.get("RescaleIntercept")) or (0.0,))[0]
    if slope[0] != 1.0 or intercept != int(intercept):
        return None
    rows, cols = parse_int(ds.get("Rows")) or 0, parse_int(ds.get("Columns")) or 0
    bits = parse_int(ds.get("BitsStored")) or 16
    count = rows * cols
    data = ds.PixelData
    if not count or not 1 <= bits <= 16 or len(data) < (frame_index + 1) * count * 2:
        return None
    signed = parse_int(ds.get("PixelRepresentation")) == 1
    pixels = np.frombuffer(
        data, "<i2" if signed else "<u2", count, frame_index * count * 2
    ).astype(np.int32)
    if bits < 16:  # the bits above BitsStored are not the value's (as pydicom)
        pixels &= (1 << bits) - 1
        if signed:
            pixels -= (pixels >> (bits - 1)) << bits
    pixels += int(intercept)
    if pixels.min() < -32768 or pixels.max() > 32767:
        return None
    return pixels.astype("<i2").reshape(rows, cols)


def default_window(pixels: np.ndarray) -> tuple[float, float]:
    """A window that spans the frame's value range (MR and images without tags)."""
    lo, hi = float(np.min(pixels)), float(np.max(pixels))
    return (lo + hi) / 2, max(hi - lo, 1.0)


def apply_window(
    pixels: np.ndarray, center: float, width: float, invert: bool = False
) -> np.ndarray:
    """Map modality values to 0..255 with DICOM's linear VOI function (PS3.3 C.11.2.1.2)."""
    width = max(float(width), 1.0)
    scaled = (
        (pixels.astype(np.float32) - (center - 0.5)) / (width - 1 or 1) + 0.5
    ) * 255
    out = np.clip(scaled, 0, 255).astype(np.uint8)
    return 255 - out if invert else out


def to_8bit(
    pixels: np.ndarray,
    center: float | None,
    width: float | None,
    photometric: str = "MONOCHROME2",
) -> np.ndarray:
    """Window a grey frame (or pass a colour frame through) as uint8."""
    if pixels.ndim == 3:
        if pixels.dtype == np.uint8:
            return pixels
        lo, hi = float(pixels.min()), float(pixels.max())
        return ((pixels - lo) / max(hi - lo, 1) * 255).astype(np.uint8)
    if center is None or width is None:
        center, width = default_window(pixels)
    return apply_window(pixels, center, width, invert=photometric == "MONOCHROME1")


def render(
    pixels: np.ndarray,
    meta: InstanceMeta,
    center: float | None,
    width: float | None,
    fmt: ImageFormat = "png",
    size: int | None = None,
    quality: int = 90,
) -> bytes:
    """A frame windowed and encoded; without a window, the instance's own
    (WindowCenter/Width), else the frame's value range."""
    if center is None or width is None:
        center, width = meta.window_center, meta.window_width
    return encode(to_8bit(pixels, center, width, meta.photometric), fmt, size, quality)


def encode(
    image: np.ndarray,
    fmt: ImageFormat = "png",
    size: int | None = None,
    quality: int = 90,
) -> bytes:
    """Encode a uint8 grey or RGB array; ``size`` bounds the longer edge."""
    pil = Image.fromarray(image)
    if size and max(pil.size) != size:
        scale = size / max(pil.size)
        pil = pil.resize(
            (max(1, round(pil.width * scale)), max(1, round(pil.height * scale))),
            Image.Resampling.BILINEAR,
        )
    buf = io.BytesIO()
    if fmt == "jpeg":
        pil.save(buf, "JPEG", quality=quality)
    else:
        pil.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def text(ds: Mapping[str, Any] | Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return str(value).rstrip(" \x00") if value is not None else ""


def meta_from_tags(instance_id: str, ds: Mapping[str, Any] | Dataset) -> InstanceMeta:
    """Build :class:`InstanceMeta` from a pydicom header or Orthanc's simplified
    tags (keyword -> value, multi-values as ``a\\\\b``)."""

    def first(keyword: str) -> float | None:
        values = parse_floats(ds.get(keyword))
        return values[0] if values else None

    spacing = parse_floats(ds.get("PixelSpacing"))
    position = parse_floats(ds.get("ImagePositionPatient"))
    return InstanceMeta(
        instance_id=instance_id,
        instance_uid=text(ds, "SOPInstanceUID"),
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        number_of_frames=parse_int(ds.get("NumberOfFrames")) or 1,
        photometric=text(ds, "PhotometricInterpretation") or "MONOCHROME2",
        modality=text(ds, "Modality"),
        window_center=first("WindowCenter"),
        window_width=first("WindowWidth"),
        rescale_slope=first("RescaleSlope") or 1.0,
        rescale_intercept=first("RescaleIntercept") or 0.0,
        pixel_spacing=spacing[:2] if spacing and len(spacing) >= 2 else None,  # type: ignore[arg-type]
        slice_thickness=first("SliceThickness"),
        slice_location=first("SliceLocation"),
        image_position=position if position and len(position) == 3 else None,  # type: ignore[arg-type]
        image_orientation=parse_floats(ds.get("ImageOrientationPatient")),
        frame_time_ms=first("FrameTime"),
        extra={
            k: text(ds, k)
            for k in (
                "PatientName",
                "PatientID",
                "StudyDate",
                "StudyDescription",
                "SeriesNumber",
                "SeriesDescription",
                "InstanceNumber",
            )
        },
    )
