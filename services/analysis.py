"""Intensity analysis of a series: histogram, statistics per slice and for the
volume, and a region of interest on one image.

Everything here works on numpy arrays of modality values (Hounsfield units for
CT, rescaled stored values for MR), as :meth:`services.pacs.Pacs.get_frame`
returns them, so a notebook and the app's analysis page get the same numbers::

    from services.pacs import open_pacs
    from services import analysis

    pacs = open_pacs(dicom_dir="var/dicom")
    vol = analysis.load_volume(pacs, study_uid, series_uid)
    vol.pixels.shape                       # (slices, rows, columns), float32
    analysis.volume_stats(vol.pixels)      # Stats(count, mean, std, min, max)
    analysis.slice_stats(vol.pixels)[0]    # the first image's
    analysis.histogram(vol.pixels, bins=256)
    analysis.roi_stats(vol.pixels[0], analysis.Box(x=100, y=120, width=40, height=30))

# Developer notes
- Statistics are population statistics (``ddof=0``) in float64, whatever the
  pixels' dtype, so sums over millions of voxels do not lose precision.
- A :class:`Box` is in pixel indices, numpy style: ``image[y:y + height,
  x:x + width]``. A rectangle drawn on a figure whose pixel centres sit on
  integer coordinates (``go.Image``, ``go.Heatmap``) becomes a box with
  :func:`box_from_corners`: the pixels whose centres it covers.
- :func:`load_volume` holds the whole series in memory; ``max_voxels`` bounds
  it (the default, 2**27 voxels, is 512 MB of float32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .imaging import default_window
from .models import ImageRef, InstanceMeta, NotFound

if TYPE_CHECKING:
    from .pacs import Pacs

MAX_VOXELS = 2**27


class AnalysisError(ValueError):
    """Input that cannot be analysed; the message says why, for the user."""


@dataclass(frozen=True)
class Stats:
    """Population statistics of some pixels."""

    count: int
    mean: float
    std: float
    min: float
    max: float


def stats(values: np.ndarray) -> Stats:
    """Count, mean, standard deviation (ddof=0), min and max of ``values``.

    Raises
    ------
    AnalysisError
        When ``values`` is empty or holds a value that is not finite.
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    if data.size == 0:
        raise AnalysisError("no pixels to measure")
    if not np.all(np.isfinite(data)):
        raise AnalysisError("the pixels hold values that are not finite")
    return Stats(
        count=int(data.size),
        mean=float(data.mean()),
        std=float(data.std()),
        min=float(data.min()),
        max=float(data.max()),
    )


def slice_stats(volume: np.ndarray) -> list[Stats]:
    """:func:`stats` of each image of a ``(slices, rows, columns)`` volume."""
    return [stats(image) for image in _volume(volume)]


def volume_stats(volume: np.ndarray) -> Stats:
    """:func:`stats` over every voxel of a ``(slices, rows, columns)`` volume."""
    return stats(_volume(volume))


@dataclass(frozen=True)
class Histogram:
    """Counts of values in ``len(edges) - 1`` equal bins (numpy's convention:
    each bin holds ``edges[i] <= v < edges[i + 1]``, the last one is closed)."""

    edges: np.ndarray
    counts: np.ndarray

    @property
    def centers(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    @property
    def width(self) -> float:
        return float(self.edges[1] - self.edges[0])


def histogram(
    values: np.ndarray,
    bins: int = 256,
    value_range: tuple[float, float] | None = None,
) -> Histogram:
    """Histogram of ``values`` in ``bins`` equal bins over ``value_range``
    (default: the values' min to max), as ``numpy.histogram`` counts them."""
    if not 1 <= int(bins) <= 100_000:
        raise AnalysisError(f"bins must be 1..100000, not {bins}")
    data = np.asarray(values).ravel()
    if data.size == 0:
        raise AnalysisError("no pixels to count")
    counts, edges = np.histogram(data, bins=int(bins), range=value_range)
    return Histogram(edges=edges, counts=counts)


@dataclass(frozen=True)
class Box:
    """A rectangle of pixels: columns ``x .. x + width - 1``, rows
    ``y .. y + height - 1`` (0-based, numpy's ``image[y:y+height, x:x+width]``)."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("x", "y", "width", "height"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise AnalysisError(f"box {name} must be a whole number, not {value!r}")
        if self.x < 0 or self.y < 0:
            raise AnalysisError("the box starts outside the image (x and y from 0)")
        if self.width < 1 or self.height < 1:
            raise AnalysisError("the box needs a width and height of at least 1")

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.height), slice(self.x, self.x + self.width)

    def fits(self, shape: tuple[int, ...]) -> bool:
        rows, columns = shape[:2]
        return self.x + self.width <= columns and self.y + self.height <= rows


def centre_box(rows: int, columns: int) -> Box:
    """A box of a quarter of each side in the middle of a ``rows`` x ``columns`` image."""
    w, h = max(columns // 4, 1), max(rows // 4, 1)
    return Box(x=(columns - w) // 2, y=(rows - h) // 2, width=w, height=h)


def box_from_corners(
    x0: float, y0: float, x1: float, y1: float, shape: tuple[int, ...]
) -> Box:
    """The pixels whose centres lie in a rectangle drawn in pixel coordinates
    (centres on integers), clipped to an image of ``shape`` (rows, columns).

    Raises
    ------
    AnalysisError
        When the rectangle covers no pixel centre of the image.
    """
    rows, columns = shape[:2]
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise AnalysisError("the rectangle has no finite corners")
    left, right = sorted((x0, x1))
    top, bottom = sorted((y0, y1))
    c0, c1 = max(math.ceil(left), 0), min(math.floor(right), columns - 1)
    r0, r1 = max(math.ceil(top), 0), min(math.floor(bottom), rows - 1)
    if c1 < c0 or r1 < r0:
        raise AnalysisError("the rectangle covers no pixel of the image")
    return Box(x=c0, y=r0, width=c1 - c0 + 1, height=r1 - r0 + 1)


def roi_stats(image: np.ndarray, box: Box) -> Stats:
    """:func:`stats` of the pixels of a 2-D ``image`` inside ``box``.

    Raises
    ------
    AnalysisError
        When the box reaches past the image or the image is not grey.
    """
    if image.ndim != 2:
        raise AnalysisError("a region of interest needs a grey image")
    if not box.fits(image.shape):
        rows, columns = image.shape
        raise AnalysisError(
            f"the box (x {box.x}..{box.x + box.width - 1}, "
            f"y {box.y}..{box.y + box.height - 1}) reaches past the "
            f"{columns} x {rows} image"
        )
    return stats(image[box.slices()])


@dataclass(frozen=True)
class SeriesVolume:
    """A series' images stacked in display order.

    ``pixels`` is ``(slices, rows, columns)`` float32 modality values;
    ``spacing`` is (between slices, between rows, between columns) in mm,
    each None when the tags do not say.
    """

    pixels: np.ndarray
    images: list[ImageRef]
    meta: InstanceMeta  # of the first image
    modality: str
    spacing: tuple[float | None, float | None, float | None]

    @property
    def unit(self) -> str:
        return "HU" if self.modality == "CT" else "value"


def load_volume(
    pacs: Pacs, study_uid: str, series_uid: str, *, max_voxels: int = MAX_VOXELS
) -> SeriesVolume:
    """Read every image of a series into one array (display order).

    Raises
    ------
    NotFound
        When the PACS has no such series.
    AnalysisError
        For a colour series, images of different sizes, or a series larger
        than ``max_voxels``.
    """
    images = pacs.list_images(study_uid, series_uid)
    if not images:
        raise NotFound(f"series {series_uid} has no images")
    first = pacs.get_instance_meta(images[0].instance_id)
    voxels = len(images) * first.rows * first.columns
    if voxels > max_voxels:
        raise AnalysisError(
            f"the series has {voxels:,} voxels, more than the {max_voxels:,} "
            "analysed here"
        )
    pixels = np.empty((len(images), first.rows, first.columns), np.float32)
    for i, image in enumerate(images):
        frame = pacs.get_frame(image.instance_id, image.frame_index)
        if frame.ndim != 2:
            raise AnalysisError("colour images have no intensity to analyse")
        if frame.shape != pixels.shape[1:]:
            raise AnalysisError(
                f"image {i + 1} is {frame.shape[1]} x {frame.shape[0]}, the first "
                f"{pixels.shape[2]} x {pixels.shape[1]}: not one volume"
            )
        pixels[i] = frame
    last = (
        pacs.get_instance_meta(images[-1].instance_id)
        if images[-1].instance_id != first.instance_id
        else first
    )
    return SeriesVolume(
        pixels=pixels,
        images=images,
        meta=first,
        modality=first.modality,
        spacing=(slice_spacing(first, last, len(images)), *_in_plane(first)),
    )


def slice_spacing(first: InstanceMeta, last: InstanceMeta, count: int) -> float | None:
    """Mean distance between slices along the slice normal, from the first and
    last images' positions; else the slice thickness (multi-frame, no geometry)."""
    orientation = first.image_orientation
    if (
        count > 1
        and first.image_position
        and last.image_position
        and orientation
        and len(orientation) == 6
        and first.instance_id != last.instance_id
    ):
        normal = np.cross(orientation[:3], orientation[3:])
        norm = float(np.linalg.norm(normal))
        if norm > 0:
            step = np.subtract(last.image_position, first.image_position)
            distance = abs(float(np.dot(normal / norm, step)))
            if distance > 0:
                return distance / (count - 1)
    return first.slice_thickness


def _in_plane(meta: InstanceMeta) -> tuple[float | None, float | None]:
    return meta.pixel_spacing if meta.pixel_spacing else (None, None)


def image_window(meta: InstanceMeta, pixels: np.ndarray) -> tuple[float, float]:
    """The window an image opens with: its WindowCenter/Width tags, else its
    value range (as the viewer does)."""
    if meta.window_center is not None and meta.window_width:
        return meta.window_center, meta.window_width
    return default_window(pixels)


def _volume(volume: np.ndarray) -> np.ndarray:
    array = np.asarray(volume)
    if array.ndim != 3:
        raise AnalysisError(
            f"a volume is (slices, rows, columns), not {array.ndim}-D of {array.shape}"
        )
    return array
