"""The test corpus: one folder of DICOM files that both backends serve.

- the generated demo study (``services.demo``);
- the real series in ``../shared/data`` (tilted gantry CT without a series
  description; MR whose file names are not in slice order);
- codec variants from the PyPI packages pydicom and pydicom-data, each given
  its own series in a "CODECS" study (the packages reuse UIDs between files, and
  a PACS keeps one instance per SOPInstanceUID);
- deliberately broken files from the same packages, in a "BROKEN" study.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.data
from pydicom.uid import generate_uid

from services.demo import GeneratedStudy, generate_study, many_series_specs
from settings import ROOT

SHARED_DATA = ROOT.parent / "shared" / "data"

# file name -> (series description, lossless?)
CODECS: dict[str, tuple[str, bool]] = {
    "CT_small.dcm": ("explicit VR little endian CT", True),
    "MR_small_implicit.dcm": ("implicit VR little endian", True),
    "MR_small_bigendian.dcm": ("explicit VR big endian", True),
    "image_dfl.dcm": ("deflated explicit VR little endian", True),
    "MR_small_RLE.dcm": ("RLE lossless", True),
    "MR_small_jp2klossless.dcm": ("JPEG 2000 lossless", True),
    "MR_small_jpeg_ls_lossless.dcm": ("JPEG-LS lossless", True),
    "JPEG-LL.dcm": ("JPEG lossless process 14", True),
    "JPGExtended.dcm": ("JPEG extended 12-bit lossy", False),
    "MR2_J2KI.dcm": ("JPEG 2000 lossy", False),
    "SC_rgb.dcm": ("RGB uncompressed", True),
    "SC_rgb_jpeg_dcmtk.dcm": ("JPEG baseline YBR colour", False),
    "emri_small.dcm": ("multi-frame, 10 frames", True),
    "emri_small_jpeg_2k_lossless.dcm": ("multi-frame JPEG 2000", True),
}
BROKEN = {
    "MR_truncated.dcm": "pixel data shorter than the image",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "JPEG 2000 stream cut short",
}


def package_file(name: str) -> Path:
    """A test file from pydicom or pydicom-data (both installed, no download)."""
    local = Path(pydicom.data.__file__).parent / "test_files" / name
    if local.exists():
        return local
    import data_store  # pydicom-data

    path = Path(data_store.__file__).parent / "data" / name
    if not path.exists():
        raise FileNotFoundError(name)
    return path


@dataclass(frozen=True)
class Corpus:
    root: Path
    demo: GeneratedStudy
    big: GeneratedStudy  # 20 series
    codecs_study_uid: str
    broken_study_uid: str
    # SOPInstanceUID -> (source file on disk in root, series description)
    codec_files: dict[str, Path]
    lossless: frozenset[str]  # SOPInstanceUIDs decoded exactly
    broken_files: dict[str, Path]

    def files(self) -> list[Path]:
        return sorted(
            p for p in self.root.rglob("*") if p.is_file() and p.name != "LICENSE"
        )


def _relabel(
    src: Path, dst: Path, study_uid: str, patient: str, number: int, desc: str
) -> str:
    ds = pydicom.dcmread(src)
    sop_uid = generate_uid(entropy_srcs=[patient, src.name])
    ds.PatientID = patient
    ds.PatientName = f"{patient}^TEST"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[patient, src.name, "series"])
    ds.SeriesNumber = number
    ds.SeriesDescription = desc
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.StudyDate = "20240301"
    ds.save_as(dst)
    return sop_uid


def build_corpus(root: Path) -> Corpus:
    root.mkdir(parents=True, exist_ok=True)
    demo = generate_study(root / "demo")
    big = generate_study(
        root / "big",
        many_series_specs(20),
        patient_name="TWENTY^SERIES",
        patient_id="DEMO0020",
        accession="DEMO0020",
        study_date="20250610",
        seed=20,
    )
    for name in ("ge-head-ct", "ge-mprage-mr"):
        shutil.copytree(SHARED_DATA / name, root / "shared" / name)

    codecs_uid = generate_uid(entropy_srcs=["codecs-study"])
    codec_files, lossless = {}, set()
    (root / "codecs").mkdir()
    for number, (name, (desc, exact)) in enumerate(CODECS.items(), start=1):
        dst = root / "codecs" / name
        uid = _relabel(package_file(name), dst, codecs_uid, "CODECS", number, desc)
        codec_files[uid] = dst
        if exact:
            lossless.add(uid)

    broken_uid = generate_uid(entropy_srcs=["broken-study"])
    broken_files = {}
    (root / "broken").mkdir()
    for number, (name, desc) in enumerate(BROKEN.items(), start=1):
        dst = root / "broken" / name
        broken_files[
            _relabel(package_file(name), dst, broken_uid, "BROKEN", number, desc)
        ] = dst
    # Patient ids that test the id hashing: leading spaces are kept, empty is allowed.
    (root / "odd-ids").mkdir()
    for patient in ("  SPACED", ""):
        study = generate_uid(entropy_srcs=["odd", patient])
        _relabel(
            package_file("CT_small.dcm"),
            root / "odd-ids" / f"p{len(patient)}.dcm",
            study,
            patient,
            1,
            "odd patient id",
        )
    return Corpus(
        root,
        demo,
        big,
        codecs_uid,
        broken_uid,
        codec_files,
        frozenset(lossless),
        broken_files,
    )
