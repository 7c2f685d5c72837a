"""The server-side image cache: each image is fetched from the PACS once.

:class:`CachingPacs` wraps any :class:`~services.pacs.Pacs` and keeps decoded
frames, instance metadata and rendered images in a size-bounded on-disk LRU
(diskcache), shared by every process of the machine. A miss fetches the whole
instance file once (one PACS request per instance, all its frames), under a
per-instance lock, so concurrent askers wait for that one fetch instead of
sending their own. Study structure (series and their images in display order)
is kept for ``metadata_ttl`` seconds.

# Developer notes
- Frames are stored compactly (int16 when the values are whole numbers that
  fit, else float32; colour as uint8) as (dtype, shape, bytes); ``get_frame``
  returns the contract's float32 / uint8.
- Fetching the file rather than Orthanc's ``/numpy`` means one request per
  instance instead of two (pixels + tags), all frames of a multi-frame
  instance at once, and the same pydicom decoders for every backend (Orthanc
  1.10's ``/numpy`` cannot decode JPEG 2000 anyway).
"""

from __future__ import annotations

import io
from pathlib import Path

import diskcache
import numpy as np
import pydicom

from . import imaging
from .coordination import Counters, KeyLock
from .imaging import ImageFormat
from .models import (
    DecodeError,
    ImageRef,
    InstanceMeta,
    NotFound,
    SeriesSummary,
    StudySummary,
)
from .pacs import Pacs, StudyQuery


def compact(pixels: np.ndarray) -> np.ndarray:
    """The smallest exact dtype for a frame (int16 for most CT and MR)."""
    if pixels.ndim == 3:
        return pixels.astype(np.uint8, copy=False)
    if (
        pixels.size
        and float(pixels.min()) >= -32768
        and float(pixels.max()) <= 32767
        and np.array_equal(pixels, np.round(pixels))
    ):
        return pixels.astype("<i2")
    return pixels.astype("<f4")


def _to_bytes(array: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    return (array.dtype.str, array.shape, array.tobytes())


def _from_bytes(value: tuple[str, tuple[int, ...], bytes]) -> np.ndarray:
    # Not .npy: np.load parses its header with ast.literal_eval, which on
    # CPython 3.11 fails now and then under threads ("AST constructor
    # recursion depth mismatch"), a 500 seen in the test suite.
    dtype, shape, data = value
    return np.frombuffer(data, dtype=np.dtype(dtype)).reshape(shape)


def open_image_cache(directory: str | Path, size_mb: int) -> diskcache.Cache:
    return diskcache.Cache(
        str(directory),
        size_limit=size_mb * 2**20,
        eviction_policy="least-recently-used",
        cull_limit=10,
        timeout=60,
    )


class CachingPacs:
    """A :class:`~services.pacs.Pacs` with a shared, bounded server-side cache.

    Parameters
    ----------
    pacs
        The backend to fetch from on a miss.
    images
        The image cache (see :func:`open_image_cache`).
    state
        The shared coordination cache (locks, counters, metadata).
    metadata_ttl
        Seconds a study's series and image lists are reused.
    """

    def __init__(
        self,
        pacs: Pacs,
        images: diskcache.Cache,
        state: diskcache.Cache,
        metadata_ttl: float = 30.0,
    ) -> None:
        self.inner = pacs
        self.name = pacs.name
        self.images = images
        self.state = state
        self.metadata_ttl = metadata_ttl
        self.locks = KeyLock(state)
        self.stats = Counters(state, "cache")

    # -- metadata (short-lived: new instances may arrive) -----------------------

    def ping(self) -> bool:
        return self.inner.ping()

    def find_studies(self, query: StudyQuery = StudyQuery()) -> list[StudySummary]:
        return self.inner.find_studies(query)

    def get_study(self, study_uid: str) -> StudySummary:
        return self._memo(f"study:{study_uid}", lambda: self.inner.get_study(study_uid))

    def _memo(self, key: str, compute):  # type: ignore[no-untyped-def]
        value = self.state.get(key)
        if value is None:
            value = compute()
            self.state.set(key, value, expire=self.metadata_ttl)
        return value

    def list_series(self, study_uid: str) -> list[SeriesSummary]:
        return self._memo(
            f"series:{study_uid}", lambda: self.inner.list_series(study_uid)
        )

    def series_images(self, study_uid: str) -> dict[str, list[ImageRef]]:
        return self._memo(
            f"images:{study_uid}", lambda: self.inner.series_images(study_uid)
        )

    def list_images(self, study_uid: str, series_uid: str) -> list[ImageRef]:
        images = self.series_images(study_uid).get(series_uid)
        if images is None:
            raise NotFound(f"series {series_uid} not found in study {study_uid}")
        return images

    def get_instance_file(self, instance_id: str) -> bytes:
        return self.inner.get_instance_file(instance_id)

    # -- pixels (immutable: kept until evicted) ----------------------------------

    @staticmethod
    def frame_key(instance_id: str, frame_index: int) -> str:
        return f"frame2:{instance_id}:{frame_index}"  # 2: (dtype, shape, bytes)

    def has_frame(self, instance_id: str, frame_index: int) -> bool:
        return self.frame_key(instance_id, frame_index) in self.images

    def _fetch(self, instance_id: str) -> None:
        """Fetch one instance from the PACS and cache its metadata and frames."""
        data = self.inner.get_instance_file(instance_id)
        self.stats.tick("fetched")
        self.stats.add("bytes_fetched", len(data))
        name = f"instance {instance_id}"
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        meta = imaging.meta_from_tags(instance_id, header)
        frames: list[tuple[str, tuple[int, ...], bytes]] = []
        try:
            frames = [
                _to_bytes(compact(f))
                for f in imaging.decode_frames(io.BytesIO(data), name)
            ]
        finally:  # the metadata is worth keeping even when the pixels fail
            with self.images.transact():  # one write transaction, not one per frame
                self.images.set(f"meta:{instance_id}", meta)
                for index, frame in enumerate(frames):
                    self.images.set(self.frame_key(instance_id, index), frame)

    def _cached(self, key: str, instance_id: str):  # type: ignore[no-untyped-def]
        value = self.images.get(key)
        if value is not None:
            self.stats.tick("hits")
            return value
        with self.locks(f"instance:{instance_id}"):
            value = self.images.get(key)  # another process may have fetched it
            if value is None:
                self.stats.tick("misses")
                self._fetch(instance_id)
                value = self.images.get(key)
            else:
                self.stats.tick("hits")
        return value

    def get_instance_meta(self, instance_id: str) -> InstanceMeta:
        meta = self._cached(f"meta:{instance_id}", instance_id)
        if meta is None:
            raise DecodeError(f"instance {instance_id}", "metadata missing after fetch")
        return meta

    def get_frame_compact(self, instance_id: str, frame_index: int = 0) -> np.ndarray:
        """The cached frame in its compact dtype (int16, float32 or uint8 RGB)."""
        key = self.frame_key(instance_id, frame_index)
        data = self.images.get(key)
        if data is not None:
            self.stats.tick("hits")
        else:
            # the metadata (cached once fetched) says which frames exist, so a
            # request for a frame past the end never reaches the PACS again
            frames = self.get_instance_meta(instance_id).number_of_frames
            if not 0 <= frame_index < frames:
                raise NotFound(f"instance {instance_id} has no frame {frame_index + 1}")
            data = self._cached(key, instance_id)
            if data is None:  # the file decoded to fewer frames than it declares
                raise DecodeError(
                    f"instance {instance_id}", f"no frame {frame_index + 1}"
                )
        return _from_bytes(data)

    def get_frame(self, instance_id: str, frame_index: int = 0) -> np.ndarray:
        frame = self.get_frame_compact(instance_id, frame_index)
        return frame if frame.ndim == 3 else frame.astype(np.float32)

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
        key = f"render:{instance_id}:{frame_index}:{center}:{width}:{size}:{fmt}:{quality}"
        cached = self.images.get(key)
        if cached is not None:
            return cached
        meta = self.get_instance_meta(instance_id)
        pixels = self.get_frame(instance_id, frame_index)
        body = imaging.render(pixels, meta, center, width, fmt, size, quality)
        self.images.set(key, body)
        return body
