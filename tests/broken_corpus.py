"""A corpus of broken and odd DICOM files, for the reliability tests only (a
separate Orthanc holds it, so the shared session corpus stays clean).

Every file starts from one image of the demo study and is given new UIDs:

- ``BROKEN2`` study, one series per defect: pixel data cut short, a file cut
  in the middle, garbage in a JPEG 2000 stream, Rows that do not match the
  pixel data, no pixel data at all, nonsense in the tags the viewer reads
  (window, rescale, spacing, position, number of frames);
- ``MIXED``: one series whose images have two sizes (all valid);
- ``SRONLY``: a study whose only series is a structured report (no images);
- ``notdicom.dcm``: not DICOM at all (Orthanc refuses it; the embedded store
  must skip it).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from services.demo import GeneratedStudy


@dataclass(frozen=True)
class BrokenCorpus:
    root: Path
    broken_study: str
    mixed_study: str
    mixed_series: str
    mixed_shapes: dict[str, tuple[int, int]]  # SOPInstanceUID -> (rows, columns)
    sr_study: str
    series: dict[str, str]  # defect -> SeriesInstanceUID

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())


def _uids(ds: pydicom.Dataset, study: str, series: str, key: str) -> None:
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["broken2", key])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _save(ds: pydicom.Dataset, path: Path) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    path.write_bytes(out.getvalue())
    return out.getvalue()


def build_broken_corpus(root: Path, demo: GeneratedStudy) -> BrokenCorpus:
    root.mkdir(parents=True, exist_ok=True)
    source = next(s for s in demo.series if s.image_count > 1 and len(s.files) > 1)
    template = pydicom.dcmread(source.files[0])
    assert "NumberOfFrames" not in template or int(template.NumberOfFrames) == 1

    def fresh(study: str, series: str, key: str, number: int, desc: str):
        ds = pydicom.dcmread(source.files[0])
        _uids(ds, study, series, key)
        ds.PatientID, ds.PatientName = "BROKEN2", "BROKEN2^TEST"
        ds.SeriesNumber, ds.SeriesDescription = number, desc
        return ds

    broken = generate_uid(entropy_srcs=["broken2-study"])
    series: dict[str, str] = {}
    defects = [
        "truncated pixels",
        "cut in the middle",
        "garbage JPEG 2000",
        "rows larger than the data",
        "no pixel data",
        "nonsense tags",
        "zero frames",
    ]
    folder = root / "broken"
    folder.mkdir()
    for number, defect in enumerate(defects, start=1):
        uid = generate_uid(entropy_srcs=["broken2", defect])
        series[defect] = uid
        ds = fresh(broken, uid, defect, number, defect)
        path = folder / f"{number:02d}.dcm"
        if defect == "truncated pixels":
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
            _save(ds, path)
        elif defect == "cut in the middle":
            data = _save(ds, path)
            path.write_bytes(data[: len(data) * 2 // 3])
        elif defect == "garbage JPEG 2000":
            ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
            rng = np.random.default_rng(2)
            ds.PixelData = encapsulate([rng.bytes(4000)])
            _save(ds, path)
        elif defect == "rows larger than the data":
            ds.Rows = int(ds.Rows) * 4
            _save(ds, path)
        elif defect == "no pixel data":
            del ds.PixelData
            _save(ds, path)
        elif defect == "nonsense tags":
            # valid placeholders of the same length, then swapped for nonsense
            # in the bytes (pydicom refuses to write invalid DS/IS values)
            swaps = {
                "WindowCenter": ("1234.51", "abc"),
                "WindowWidth": ("1234.52", "-0"),
                "RescaleSlope": ("1234.53", "NaN"),
                "RescaleIntercept": ("1234.54", "1e999"),
                "PixelSpacing": (["1234.55", "1234.56"], "x\\y"),
                "ImagePositionPatient": (["1234.57", "1", "1"], "1\\2"),
                "SliceThickness": ("1234.58", "thick"),
            }
            for keyword, (placeholder, _) in swaps.items():
                setattr(ds, keyword, placeholder)
            data = _save(ds, path)
            for placeholder, nonsense in swaps.values():
                old_value = (
                    "\\".join(placeholder)
                    if isinstance(placeholder, list)
                    else placeholder
                ).encode()
                old_value += b" " * (len(old_value) % 2)
                assert data.count(old_value) == 1, old_value
                data = data.replace(old_value, nonsense.encode().ljust(len(old_value)))
            path.write_bytes(data)
        elif defect == "zero frames":
            ds.NumberOfFrames = 0
            _save(ds, path)

    # a series of two image sizes (each image valid)
    mixed = generate_uid(entropy_srcs=["mixed-study"])
    mixed_series = generate_uid(entropy_srcs=["mixed-series"])
    shapes = {}
    (root / "mixed").mkdir()
    for k, size in enumerate((64, 64, 128)):
        ds = fresh(mixed, mixed_series, f"mixed{k}", 1, "two image sizes")
        ds.PatientID, ds.PatientName = "MIXED", "MIXED^SIZES"
        ds.Rows = ds.Columns = size
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0, 0, float(k)]
        ds.PixelData = (
            (np.arange(size * size, dtype=np.int16) % 500).reshape(size, size).tobytes()
        )
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        _save(ds, root / "mixed" / f"{k}.dcm")
        shapes[ds.SOPInstanceUID] = (size, size)

    # a study whose only series is a structured report
    sr_study = generate_uid(entropy_srcs=["sr-only-study"])
    sr = pydicom.Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID
    _uids(sr, sr_study, generate_uid(entropy_srcs=["sr-only-series"]), "sr")
    sr.PatientID, sr.PatientName = "SRONLY", "SR^ONLY"
    sr.StudyDate, sr.Modality, sr.SeriesNumber = "20240101", "SR", 1
    sr.SeriesDescription = "report"
    sr.ValueType, sr.CompletionFlag, sr.VerificationFlag = (
        "CONTAINER",
        "COMPLETE",
        "UNVERIFIED",
    )
    (root / "sr").mkdir()
    _save(sr, root / "sr" / "report.dcm")

    (root / "notdicom.dcm").write_bytes(b"this is not a DICOM file\n" * 10)
    return BrokenCorpus(
        root, broken, mixed, mixed_series, shapes, sr_study, series=series
    )
