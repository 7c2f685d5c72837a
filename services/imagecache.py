"""The server-side image cache: each image is fetched from the PACS once.

:class:`CachingPacs` wraps any :class:`~services.pacs.Pacs` and keeps instance
files, instance metadata, decoded frames and rendered images in a size-bounded
on-disk LRU (diskcache), shared by every process of the machine. A miss
fetches the whole instance file once (one PACS request per instance, all its
frames), under a per-instance lock, so concurrent askers wait for that one
fetch instead of sending their own. The bulk loader only stores files
(:meth:`CachingPacs.load_instance`); a frame is decoded from its file when
first asked for, that frame only, and kept (unless the file is plain:
uncompressed 16-bit grey, whose frame is read from it again in a fraction of
a millisecond, :func:`services.imaging.native_frame`). Study structure (series and their
images in display order) is kept for ``metadata_ttl`` seconds; past that it
is answered at once and asked of the PACS again in the background (stale while
revalidating), and it stands in while the PACS does not answer.

# Developer notes
- Frames are stored compactly (int16 when the values are whole numbers that
  fit, else float32; colour as uint8) as (dtype, shape, bytes); ``get_frame``
  returns the contract's float32 / uint8.
- Fetching the file rather than Orthanc's ``/numpy`` means one request per
  instance instead of two (pixels + tags), all frames of a multi-frame
  instance at once, and the same pydicom decoders for every backend (Orthanc
  1.10's ``/numpy`` cannot decode JPEG 2000 anyway).
- Storing the file and decoding on demand keeps the bulk load to fetch and
  store (decoding every frame up front was most of its CPU, bench/RESULTS.md);
  the cost moves to a frame's first view (about 1 ms for 256x256 uncompressed,
  more for JPEG 2000), and a viewed image takes its file's size plus its
  frame's in the cache. The loader can only tell a file no installed decoder
  reads (from its transfer syntax); one whose pixel data is corrupt counts as
  loaded and answers ``DecodeError`` (422) when viewed.
- ``/file`` answers come from the cache too.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import diskcache
import numpy as np
import pydicom
import pydicom.uid
from pydicom.pixels import get_decoder

from . import imaging
from .coordination import Counters, KeyLock, SerialWriteCache
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

STALE_FOR = 24 * 3600.0  # seconds a study's last known structure may stand in
log = logging.getLogger(__name__)


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


def _copied(value: Any) -> Any:
    """A memo's value as a fresh answer: its lists (and a dict's lists) copied,
    the frozen dataclasses in them shared."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return {k: list(v) if isinstance(v, list) else v for k, v in value.items()}
    return value


def _meta(instance_id: str, file: bytes | pydicom.Dataset) -> InstanceMeta:
    """The metadata of an instance file, or of the file parsed already."""
    try:
        header = (
            file
            if isinstance(file, pydicom.Dataset)
            else pydicom.dcmread(io.BytesIO(file), stop_before_pixels=True, force=True)
        )
        return imaging.meta_from_tags(instance_id, header)
    except Exception as exc:
        name, error = f"instance {instance_id}", f"{type(exc).__name__}: {exc}"
        raise DecodeError(name, error) from exc


def undecodable(data: bytes) -> str:
    """Why no installed decoder can read the file's pixels ("" when one can,
    or when it cannot be told without decoding them): its transfer syntax."""
    syntax = _transfer_syntax(data)
    if syntax is None:  # not the usual file meta: ask pydicom
        try:
            header = pydicom.dcmread(
                io.BytesIO(data), stop_before_pixels=True, force=True, specific_tags=[]
            )
            syntax = str(header.file_meta.TransferSyntaxUID)
        except Exception as exc:  # not DICOM at all
            return f"{type(exc).__name__}: {exc}"
    return _undecodable_syntax(syntax)


@functools.lru_cache(maxsize=64)
def _undecodable_syntax(syntax: str) -> str:
    uid = pydicom.uid.UID(syntax)
    try:
        if not uid.is_compressed or get_decoder(uid).is_available:
            return ""
    except NotImplementedError:  # a transfer syntax pydicom does not know
        pass
    return f"no installed decoder reads transfer syntax {uid}"


_LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
}


def _transfer_syntax(data: bytes) -> str | None:
    """(0002,0010) read from the file meta by hand (always explicit VR little
    endian after the 128-byte preamble and ``DICM``), or None where that does
    not find it: a few microseconds instead of pydicom's parse, per image."""
    if data[128:132] != b"DICM":
        return None
    pos, end = 132, min(len(data), 132 + 65536)
    while pos + 8 <= end:
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 2:
            return None
        vr = data[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", data, pos + 8)
            start = pos + 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            start = pos + 8
        if element == 0x0010:
            if vr != b"UI" or start + length > end:
                return None
            value = (
                data[start : start + length].rstrip(b"\0 ").decode("ascii", "replace")
            )
            return value or None
        pos = start + length
    return None


class WholeFileDisk(diskcache.Disk):
    """diskcache's ``Disk``, writing a large value in one ``write`` call, into
    one of 256 folders that stay.

    diskcache 5.6 (pinned) iterates a ``BytesIO`` of the value, which yields
    it line by line: a DICOM file or frame went to disk in hundreds of small
    writes (a b"\\n" every few hundred bytes), and a failing ``mkdir`` came
    before each file. Together about a third of the bulk loader's time per
    image (bench/RESULTS.md). It also spreads files over 65,536 folders two
    levels deep and removes a folder with its last file, so that most writes
    of a fresh (or just emptied) cache made one or two folders first: a
    ``mkdir`` and a file created in a new folder cost ~0.4 ms of a ~0.6 ms
    write here. Files go to ``00`` .. ``ff`` instead (a 2 GB cache of ~150 KB
    files: ~55 a folder), left in place when emptied. Files written by the
    two-level layout are still read and removed (the name is in the index).
    Folders this process made are remembered (an open that fails, the folder
    removed meanwhile, makes it again)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._folders: set[str] = set()  # made by this process (and not culled)

    def filename(self, key=diskcache.core.UNKNOWN, value=diskcache.core.UNKNOWN):  # type: ignore[no-untyped-def]
        hex_name = os.urandom(16).hex()
        filename = os.path.join(hex_name[:2], hex_name[2:] + ".val")
        return filename, os.path.join(self._directory, filename)

    def remove(self, file_path: str) -> None:
        try:
            os.remove(os.path.join(self._directory, file_path))
        except OSError:  # removed by another process (or cache) first
            pass

    def _write(self, full_path, iterator, mode, encoding=None):  # type: ignore[no-untyped-def]
        if isinstance(iterator, io.BytesIO):
            iterator = iter((iterator.getvalue(),))
        folder = os.path.dirname(full_path)
        for attempt in range(10):  # as diskcache: a cull may remove the folder
            try:
                if folder not in self._folders:  # a stat per write otherwise
                    # a parent culled by another writer meanwhile fails this
                    os.makedirs(folder, exist_ok=True)
                    self._folders.add(folder)
                writer = open(full_path, mode, encoding=encoding)
            except OSError:
                self._folders.discard(folder)
                if attempt == 9:
                    raise
                continue
            with writer:
                size = 0
                for chunk in iterator:
                    size += len(chunk)
                    writer.write(chunk)
                return size


def open_image_cache(directory: str | Path, size_mb: int) -> diskcache.Cache:
    return SerialWriteCache(
        str(directory),
        size_limit=size_mb * 2**20,
        eviction_policy="least-recently-used",
        disk=WholeFileDisk,
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
    locks
        Per-key locks across processes for "fetch once" (``locks(key)`` a
        context manager); leased locks in ``state`` by default.
    """

    def __init__(
        self,
        pacs: Pacs,
        images: diskcache.Cache,
        state: diskcache.Cache,
        metadata_ttl: float = 30.0,
        locks: Callable[[str], AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.inner = pacs
        self.name = pacs.name
        self.images = images
        self.state = state
        self.metadata_ttl = metadata_ttl
        self.locks = locks or KeyLock(state)
        self.stats = Counters(state, "cache")
        # memo key -> (value, fresh until): this process's copies, see _memo
        self._memos: dict[str, tuple[Any, float]] = {}
        self._memos_lock = threading.Lock()
        self._refreshing: set[str] = set()  # memo keys being computed again

    # -- metadata (short-lived: new instances may arrive) -----------------------

    def ping(self) -> bool:
        return self.inner.ping()

    def find_studies(self, query: StudyQuery = StudyQuery()) -> list[StudySummary]:
        return self.inner.find_studies(query)

    def get_study(self, study_uid: str) -> StudySummary:
        return self._memo(f"study:{study_uid}", lambda: self.inner.get_study(study_uid))

    def _memo(self, key: str, compute):  # type: ignore[no-untyped-def]
        """``compute()``, reused for ``metadata_ttl`` seconds. Past that the
        last answer is returned at once and ``compute()`` runs again in a
        background thread (one per key and process), so that no request
        waits for the PACS's listing (~45 ms for a 500-image study through
        Orthanc: one request every 30 s did, a jump's often). While the PACS
        does not answer the last answer stands (up to ``STALE_FOR``), so
        progress and pages of a study already open keep working through an
        outage. With no answer yet, or once the PACS said the study is gone
        (NotFound), the caller waits for ``compute()``.

        The answer lives in the shared state with its "fresh until" time also
        under a small key of its own; a process keeps a copy and uses it while
        that time is the one it holds, so that a progress poll reads a float
        instead of the whole listing (a file of its own in diskcache past 32
        KB, unpickled each time: ~half the request threads' GIL samples in a
        bulk load, bench/RESULTS.md). Callers get copies of its lists."""
        now = time.time()
        local = self._memos.get(key)
        if local is not None and now < local[1]:
            if self.state.get(f"memo-at:{key}") == local[1]:
                return _copied(local[0])
        entry = self.state.get(f"memo:{key}")  # (value, fresh until)
        if entry is not None:
            if now < entry[1]:
                self._keep(key, entry)
            else:
                self._refresh(key, compute)
            return _copied(entry[0])
        return _copied(self._remember(key, compute()))

    def _remember(self, key: str, value: Any) -> Any:
        entry = (value, time.time() + self.metadata_ttl)
        self.state.set(f"memo:{key}", entry, expire=STALE_FOR)
        self.state.set(f"memo-at:{key}", entry[1], expire=STALE_FOR)  # after it
        self._keep(key, entry)
        return value

    def _refresh(self, key: str, compute) -> None:  # type: ignore[no-untyped-def]
        """Run ``compute()`` for a stale memo in the background, once at a time."""
        with self._memos_lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def run() -> None:
            try:
                self._remember(key, compute())
            except NotFound:  # gone: the next caller asks and hears it
                self.state.delete(f"memo:{key}")
                with self._memos_lock:
                    self._memos.pop(key, None)
            except Exception as exc:  # (unavailable: the last answer stands)
                log.info("%s not refreshed: %s", key, exc)
            finally:
                with self._memos_lock:
                    self._refreshing.discard(key)

        threading.Thread(target=run, name=f"refresh {key}", daemon=True).start()

    def _keep(self, key: str, entry: tuple[Any, float]) -> None:
        with self._memos_lock:
            if len(self._memos) >= 256:  # a few studies are open at a time
                now = time.time()
                self._memos = {k: e for k, e in self._memos.items() if e[1] > now}
                if len(self._memos) >= 256:
                    self._memos.clear()
            self._memos[key] = entry

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

    # -- pixels (immutable: kept until evicted) ----------------------------------

    @staticmethod
    def frame_key(instance_id: str, frame_index: int) -> str:
        return f"frame2:{instance_id}:{frame_index}"  # 2: (dtype, shape, bytes)

    @staticmethod
    def file_key(instance_id: str) -> str:
        return f"file:{instance_id}"

    def has_frame(self, instance_id: str, frame_index: int) -> bool:
        """True when the frame can be served without asking the PACS."""
        return (  # the file first: the loader stores files, frames come later
            self.file_key(instance_id) in self.images
            or self.frame_key(instance_id, frame_index) in self.images
        )

    def load_instance(self, instance_id: str) -> bool:
        """Have the instance file in the cache (the bulk loader's call): fetched
        from the PACS at most once, stored as it came, its frames decoded on
        first request. True when this call fetched it.

        Raises ``DecodeError`` when no installed decoder reads its transfer
        syntax (the file is kept: its tags are still worth having)."""
        fetched, problem = False, None
        if self.file_key(instance_id) not in self.images:
            with self.locks(f"instance:{instance_id}"):
                if self.file_key(instance_id) not in self.images:
                    self.stats.tick("misses")
                    fetched, problem = True, self._fetch(instance_id)[1]
        if problem is None:  # fetched before: what did its tags say?
            problem = self.images.get(f"undecodable:{instance_id}", "")
        if problem:
            raise DecodeError(f"instance {instance_id}", problem)
        return fetched

    def cached_frames(self, images: list[ImageRef]) -> set[tuple[str, int]]:
        """``(instance_id, frame_index)`` of those of ``images`` that
        :meth:`has_frame` would say are cached, in a query or two where the
        cache has ``present`` (SQLite: :class:`~services.coordination.SerialWriteCache`)."""
        present = getattr(self.images, "present", None)
        if present is None:
            return {
                (i.instance_id, i.frame_index)
                for i in images
                if self.has_frame(i.instance_id, i.frame_index)
            }
        keys = {self.file_key(i.instance_id) for i in images}
        keys.update(self.frame_key(i.instance_id, i.frame_index) for i in images)
        found = present(sorted(keys))
        return {
            (i.instance_id, i.frame_index)
            for i in images
            if self.file_key(i.instance_id) in found
            or self.frame_key(i.instance_id, i.frame_index) in found
        }

    def load_frame(self, instance_id: str, frame_index: int) -> bool:
        """Have the frame servable without asking the PACS (the bulk loader's
        call): cached as a decoded frame or in its instance file, else the
        file fetched (at most once, as :meth:`load_instance`). True when this
        call fetched it.

        Two cache lookups, under the instance's lock, where
        :meth:`has_frame` then :meth:`load_instance` made four (bench/RESULTS.md).
        Raises ``DecodeError`` when the file it fetched has a transfer syntax
        no installed decoder reads (one cached before is not looked at again,
        as with :meth:`has_frame`)."""
        with self.locks(f"instance:{instance_id}"):
            if self.has_frame(instance_id, frame_index):
                return False
            self.stats.tick("misses")
            problem = self._fetch(instance_id)[1]
        if problem:
            raise DecodeError(f"instance {instance_id}", problem)
        return True

    def _fetch(self, instance_id: str) -> tuple[bytes, str]:
        """Fetch one instance file from the PACS and cache it as it came
        (metadata and frames are read from it when first asked for). Call
        under the instance's lock. Returns the file and what
        :func:`undecodable` says of it."""
        data = self.inner.get_instance_file(instance_id)
        self.stats.tick("fetched")
        self.stats.add("bytes_fetched", len(data))
        problem = undecodable(data)
        if problem:  # first: whoever sees the file sees this too
            self.images.set(f"undecodable:{instance_id}", problem)
        # not in a transaction: diskcache writes the file before it takes the
        # write lock, so other threads' writes do not wait for this one's disk
        self.images.set(self.file_key(instance_id), data)
        return data, problem

    def _file(self, instance_id: str) -> bytes:
        """The instance file, from the cache or else fetched once (single flight)."""
        data = self.images.get(self.file_key(instance_id))
        if data is not None:
            self.stats.tick("hits")
            return data
        with self.locks(f"instance:{instance_id}"):
            data = self.images.get(self.file_key(instance_id))  # fetched meanwhile?
            if data is not None:
                self.stats.tick("hits")
                return data
            self.stats.tick("misses")
            return self._fetch(instance_id)[0]

    def get_instance_file(self, instance_id: str) -> bytes:
        return self._file(instance_id)

    def get_instance_meta(
        self, instance_id: str, file: bytes | None = None
    ) -> InstanceMeta:
        meta = self.images.get(f"meta:{instance_id}")
        if meta is None:  # read from the file (fetched if need be) once
            meta = _meta(instance_id, file or self._file(instance_id))
            self.images.set(f"meta:{instance_id}", meta)
        return meta

    def get_frame_compact(self, instance_id: str, frame_index: int = 0) -> np.ndarray:
        """The cached frame in its compact dtype (int16, float32 or uint8 RGB).

        A frame not decoded yet is decoded from the cached file (fetched first
        if need be), that frame only, and kept, unless the file is plain (read
        again from it as quickly as from a copy of its own)."""
        key = self.frame_key(instance_id, frame_index)
        data = self.images.get(key)
        if data is not None:
            self.stats.tick("hits")
            return _from_bytes(data)
        _, frame, new, plain = self._decode(instance_id, frame_index)
        if not plain:
            new[key] = _to_bytes(frame)
        self._store(new)
        return frame

    def _decode(
        self, instance_id: str, frame_index: int
    ) -> tuple[InstanceMeta, np.ndarray, dict[str, Any], bool]:
        """The instance's metadata and one frame (compact dtype) from the
        cached file (fetched first if need be), parsed once for both, the
        cache entries that made and are not stored yet (the metadata, when it
        was not cached), and whether the frame was read straight from the
        file's plain pixel data (:func:`imaging.native_frame`)."""
        meta = self.images.get(f"meta:{instance_id}")
        file = self._file(instance_id)
        name = f"instance {instance_id}"
        try:
            dataset = pydicom.dcmread(io.BytesIO(file), force=True)
        except Exception as exc:
            raise DecodeError(name, f"{type(exc).__name__}: {exc}") from exc
        new: dict[str, Any] = {}
        if meta is None:
            meta = new[f"meta:{instance_id}"] = _meta(instance_id, dataset)
        # the metadata (cached with the file) says which frames exist, so a
        # request for a frame past the end never reaches the PACS again
        if not 0 <= frame_index < meta.number_of_frames:
            raise NotFound(f"instance {instance_id} has no frame {frame_index + 1}")
        plain = imaging.native_frame(dataset, frame_index)
        if plain is not None:
            return meta, plain, new, True
        frame = compact(imaging.decode_frame(dataset, frame_index, name))
        return meta, frame, new, False

    def _store(self, entries: dict[str, Any]) -> None:
        for key, value in entries.items():
            self.images.set(key, value)

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
        data = self.images.get(self.frame_key(instance_id, frame_index))
        new: dict[str, Any] = {}
        if data is not None:
            meta, frame = self.get_instance_meta(instance_id), _from_bytes(data)
        else:  # a first view (a card's thumbnail): one parse, the frame not kept
            meta, frame, new, _ = self._decode(instance_id, frame_index)
        pixels = frame if frame.ndim == 3 else frame.astype(np.float32)
        body = new[key] = imaging.render(
            pixels, meta, center, width, fmt, size, quality
        )
        self._store(new)
        return body
