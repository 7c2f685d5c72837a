"""Synthetic demo study: CT and MR DICOM files generated from scratch.

Used on the app's first start (:func:`ensure_demo_study` fills an empty DICOM
folder), by the tests (distinct studies per ``seed``) and by the benchmarks
(:func:`many_series_specs`). The files are plain uncompressed Part-10 files that
both pydicom and Orthanc decode; UIDs and pixels are deterministic per seed.

Anatomy is a label phantom in patient coordinates (LPS, mm, z up the body:
abdomen below -200, thorax -200..0, neck 0..60, head above 60) painted with
vectorised ellipses, then mapped to Hounsfield units (CT) or T1/T2 intensities.

# Developer notes
- Display order is the ascending projection of ImagePositionPatient on the
  slice normal; files are written shuffled under hash names so nothing can
  rely on file-name order.
- Only stdlib, numpy and pydicom: no Dash or Flask here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

Kind = Literal["thorax", "abdomen", "head", "scout", "brain_t1", "brain_t2"]
Modality = Literal["CT", "MR", "OT"]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
SC_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
MF_WORD_SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7.3"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)

# Tissue labels and each tissue's (HU, T1, T2): CSF is dark on T1, bright on T2.
AIR, FAT, SOFT, LUNG, BONE, CORTEX, BLOOD = range(7)
LIVER, KIDNEY, SPLEEN, GREY, WHITE, CSF, GAS = range(7, 14)
_HU, _T1, _T2 = np.array(
    [
        (-1000, 0, 0),  # air
        (-100, 1000, 700),  # fat
        (40, 500, 350),  # soft tissue, muscle
        (-850, 20, 20),  # lung
        (700, 350, 250),  # bone (vertebral body, ribs)
        (1200, 30, 20),  # cortical bone, skull
        (50, 200, 150),  # blood: heart, aorta
        (60, 600, 250),  # liver
        (55, 450, 700),  # kidney
        (50, 400, 650),  # spleen
        (40, 550, 700),  # grey matter
        (28, 800, 450),  # white matter
        (8, 150, 1500),  # CSF, vitreous
        (-950, 0, 0),  # gas in the body: trachea, bowel
    ],
    np.float32,
).T
# kind -> (centre z of the stack in mm, value table, BodyPartExamined, CT window)
_KINDS: dict[str, tuple[float, np.ndarray, str, tuple[float, float] | None]] = {
    "thorax": (-100.0, _HU, "CHEST", (40.0, 400.0)),
    "abdomen": (-300.0, _HU, "ABDOMEN", (40.0, 400.0)),
    "head": (150.0, _HU, "HEAD", (40.0, 80.0)),
    "scout": (0.0, _HU, "CHEST", None),
    "brain_t1": (150.0, _T1, "BRAIN", None),
    "brain_t2": (150.0, _T2, "BRAIN", None),
}
_SCOUT_TOP_Z = 60.0  # the scout's first row, at the base of the neck


@dataclass(frozen=True)
class SeriesSpec:
    """One series to generate; ``description=None`` leaves SeriesDescription out."""

    description: str | None
    modality: Modality
    series_number: int
    slices: int  # files, or frames when ``multiframe``
    rows: int
    columns: int
    slice_thickness: float  # mm, also the spacing between slices
    pixel_spacing: float  # mm, square pixels
    kind: Kind
    multiframe: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS or self.modality not in ("CT", "MR", "OT"):
            raise ValueError(f"unknown kind/modality: {self.kind}/{self.modality}")
        if min(self.slices, self.rows, self.columns) < 1:
            raise ValueError("slices, rows and columns must be >= 1")


@dataclass(frozen=True)
class GeneratedSeries:
    series_uid: str
    series_number: int
    description: str | None
    modality: str
    image_count: int  # frames
    files: tuple[Path, ...]  # display order
    instance_uids: tuple[str, ...]  # display order


@dataclass(frozen=True)
class GeneratedStudy:
    study_uid: str
    patient_id: str
    series: tuple[GeneratedSeries, ...]


DEFAULT_DEMO: tuple[SeriesSpec, ...] = (
    SeriesSpec("CT Scout", "CT", 1, 1, 512, 512, 1.0, 1.0, "scout"),
    SeriesSpec("CT Thorax 5mm", "CT", 2, 40, 512, 512, 5.0, 0.7, "thorax"),
    SeriesSpec("CT Thorax 1mm", "CT", 3, 120, 256, 256, 1.0, 1.4, "thorax"),
    SeriesSpec("CT Abdomen 5mm", "CT", 4, 32, 512, 512, 5.0, 0.75, "abdomen"),
    SeriesSpec("MR T1 brain axial", "MR", 5, 24, 256, 256, 5.0, 0.9, "brain_t1"),
    SeriesSpec("MR T2 brain axial", "MR", 6, 24, 256, 256, 5.0, 0.9, "brain_t2"),
    SeriesSpec("MR T1 multi-frame", "MR", 7, 16, 256, 256, 7.0, 0.9, "brain_t1", True),
    SeriesSpec(None, "CT", 8, 20, 512, 512, 6.0, 0.45, "head"),
)


# --------------------------------------------------------------------- phantom
class _Canvas:
    """A label image over ascending column (``xs``) and row (``ys``) centres in mm."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray) -> None:
        self.xs, self.ys = xs, ys
        self.lab = np.zeros((ys.size, xs.size), np.uint8)

    def ellipse(
        self,
        cx: float,
        cy: float,
        a: float,
        b: float,
        label: int,
        wobble: float = 0.0,
        phase: float = 0.0,
    ) -> None:
        """Paint ``label`` inside an ellipse (mm), touching only its bounding box.

        ``wobble`` makes the outline wavy (gyri) with that relative amplitude.
        """
        if a <= 0.5 or b <= 0.5:
            return
        grow = 1.0 + wobble
        c0, c1 = np.searchsorted(self.xs, (cx - a * grow, cx + a * grow))
        r0, r1 = np.searchsorted(self.ys, (cy - b * grow, cy + b * grow))
        if c0 >= c1 or r0 >= r1:
            return
        u = ((self.xs[c0:c1] - cx) / a)[None, :]
        v = ((self.ys[r0:r1] - cy) / b)[:, None]
        limit = 1.0
        if wobble:
            limit = (1.0 + wobble * np.sin(7 * np.arctan2(v, u) + phase)) ** 2
        self.lab[r0:r1, c0:c1][u * u + v * v <= limit] = label

    def pair(self, cx: float, cy: float, a: float, b: float, label: int) -> None:
        """The same ellipse on the patient's right (-x) and left (+x)."""
        for side in (-1, 1):
            self.ellipse(side * cx, cy, a, b, label)

    def spine(self, cy: float, r: float) -> None:
        self.ellipse(0, cy + 1.9 * r, 1.1 * r, 0.55 * r, BONE)  # posterior arch
        self.ellipse(0, cy + 1.45 * r, 0.45 * r, 0.4 * r, CSF)  # spinal canal
        self.ellipse(0, cy, r, 0.9 * r, CORTEX)
        self.ellipse(0, cy, r - 2.5, 0.9 * r - 2.5, BONE)  # vertebral body


def _thorax(p: _Canvas, z: float) -> None:
    t = min(max((z + 200.0) / 200.0, 0.0), 1.0)  # 0 at the diaphragm, 1 at the apex
    a, b = 150 + 20 * t, 105 + 5 * t
    p.ellipse(0, 0, a, b, FAT)
    p.ellipse(0, 0, a - 12, b - 12, SOFT)
    s = math.sqrt(max(1 - ((t - 0.45) / 0.62) ** 2, 0.05))
    p.pair(0.48 * a, 2, 0.28 * a * (0.6 + 0.4 * s), 0.62 * b * s, LUNG)
    if t < 0.25:  # liver dome under the right lung
        d = math.sqrt(1 - t / 0.25)
        p.ellipse(-0.45 * a, 15, 75 * d, 60 * d, LIVER)
    if 0.08 < t < 0.62:
        h = math.sin(math.pi * (t - 0.08) / 0.54)
        p.ellipse(20, -25, 55 * h + 5, 45 * h + 5, BLOOD)  # heart
    if 0.45 < t < 0.8:
        p.ellipse(8, -32, 14, 14, BLOOD)  # ascending aorta
    if 0.78 <= t < 0.87:
        p.ellipse(18, -2, 12, 36, BLOOD)  # aortic arch
    p.ellipse(22, 30, 11, 11, BLOOD)  # descending aorta
    if t > 0.7:
        p.ellipse(-4, 5, 9, 9, GAS)  # trachea
    if t > 0.25:
        p.ellipse(0, 20 - b, 14, 6, BONE)  # sternum
    for k in range(16):  # ribs, cut obliquely: they come and go along z
        th = 2 * math.pi * (k + 0.5) / 16
        if abs(math.sin(th)) < 0.9 and math.cos(2 * math.pi * z / 30 + 0.9 * k) > -0.3:
            p.ellipse((a - 20) * math.cos(th), (b - 19) * math.sin(th), 6, 4, BONE)
    p.spine(55, 17)


def _abdomen(p: _Canvas, z: float) -> None:
    t = min(max((z + 400.0) / 200.0, 0.0), 1.0)  # 0 at the pelvis, 1 at the diaphragm
    a, b = 155 + 10 * t, 115
    p.ellipse(0, 0, a, b, FAT)
    p.ellipse(0, 0, a - 20, b - 20, SOFT)
    if t < 0.2:
        p.pair(95, 35, 10, 45 * (1 - t / 0.2) + 5, BONE)  # iliac wings
    for k in range(6):  # bowel gas drifting with z
        ang, r = k * 1.047 + z / 45, 8 + 5 * math.sin(z / 17 + 2 * k)
        p.ellipse(55 * math.cos(ang), 35 * math.sin(ang) - 25, r, 0.8 * r, GAS)
    if t > 0.35:
        s = math.sqrt((t - 0.35) / 0.65)
        p.ellipse(-55, -5, 80 * s, 70 * s, LIVER)
    if t > 0.55:
        s = math.sqrt((t - 0.55) / 0.45)
        p.ellipse(88, 30, 28 * s, 42 * s, SPLEEN)
    if 0.2 < t < 0.75:
        k = math.sin(math.pi * (t - 0.2) / 0.55)
        p.pair(68, 48, 24 * k + 3, 36 * k + 3, KIDNEY)
    if t > 0.9:
        p.pair(75, 50, 250 * (t - 0.9), 250 * (t - 0.9), LUNG)  # lung bases
    p.ellipse(14, 20, 10, 10, BLOOD)  # aorta
    p.ellipse(-22, 22, 11, 9, BLOOD)  # inferior vena cava
    p.spine(52, 20)


def _neck(p: _Canvas, z: float) -> None:
    p.ellipse(0, 10, 70, 60, FAT)
    p.ellipse(0, 10, 62, 52, SOFT)
    p.pair(25, 0, 4, 4, BLOOD)  # carotids
    p.ellipse(0, -18, 8, 7, GAS)  # trachea
    p.spine(30, 10)


def _head(p: _Canvas, z: float) -> None:
    w = 1 - ((z - 150.0) / 90.0) ** 2
    if w <= 0:
        return
    hs = math.sqrt(w) if z >= 150 else max(math.sqrt(w), 0.75)
    a, b = 75 * hs, 92 * hs
    p.ellipse(0, 5, a, b, FAT)  # scalp
    p.ellipse(0, 5, a - 3, b - 3, SOFT)
    p.ellipse(0, 5, a - 5, b - 5, CORTEX)  # skull
    bs = 1 - ((z - 160.0) / 75.0) ** 2
    if bs <= 0:
        p.ellipse(0, 5, a - 12, b - 12, SOFT)  # skull base
        return
    p.ellipse(0, 5, a - 12, b - 12, CSF)
    p.ellipse(0, 5, a - 14, b - 14, GREY)
    wm = 0.8 * math.sqrt(bs)
    p.ellipse(0, 5, (a - 14) * wm, (b - 14) * wm, WHITE, wobble=0.08, phase=z / 9)
    if 125 < z < 180:
        v = math.sin(math.pi * (z - 125) / 55)
        p.pair(8, -2, 4 * v + 1.5, 22 * v + 3, CSF)  # lateral ventricles
    if 85 < z < 112:
        e = math.sin(math.pi * (z - 85) / 27)
        p.pair(30, 27 - b, 11 * e + 1, 11 * e + 1, CSF)  # eyes


def _anatomy(z: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Tissue labels of the axial plane at height ``z`` (rows follow ``ys``)."""
    canvas = _Canvas(xs, ys)
    region = _abdomen if z < -200 else _thorax if z < 0 else _neck if z < 60 else _head
    region(canvas, z)
    return canvas.lab


def _scout(xs: np.ndarray, zs: np.ndarray) -> np.ndarray:
    """A coronal projection radiograph in HU-like values, rows at heights ``zs``."""
    depth = np.linspace(-140.0, 140.0, 57)
    mu = np.clip((_HU + 1000.0) / 1000.0, 0, None) * (depth[1] - depth[0])
    proj = np.stack([mu[_anatomy(float(z), xs, depth)].sum(axis=0) for z in zs])
    return -1000.0 + 5.0 * proj


def _finish(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Soften edges (2x2 box, in place) and add Gaussian noise."""
    img[1:] = 0.5 * (img[1:] + img[:-1])
    img[:, 1:] = 0.5 * (img[:, 1:] + img[:, :-1])
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(sigma)
    return img


# --------------------------------------------------------------------- writing
def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _ds(v: float) -> float:
    return round(float(v), 4)  # short enough for a DS


def _window(values: np.ndarray, spec: SeriesSpec) -> tuple[float, float]:
    fixed = _KINDS[spec.kind][3]
    if fixed is not None and spec.modality == "CT":
        return fixed
    sample = values[:, ::4, ::4]
    lo, hi = np.percentile(sample[sample > sample.min() + 50], [1.0, 99.5])
    return round(float(lo + hi) / 2), max(round(float(hi - lo)), 1)


def _series_dataset(spec: SeriesSpec, study: dict[str, str], hu: bool) -> Dataset:
    """The tags every instance of the series shares, but its UIDs and window."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    if spec.multiframe:
        ds.SOPClassUID, ds.ImageType = MF_WORD_SC_STORAGE, ["DERIVED", "SECONDARY"]
        ds.ConversionType = "SYN"
        ds.SpacingBetweenSlices = _ds(spec.slice_thickness)
    else:
        sop = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}
        ds.SOPClassUID = sop.get(spec.modality, SC_IMAGE_STORAGE)
        plane = "LOCALIZER" if spec.kind == "scout" else "AXIAL"
        ds.ImageType = ["ORIGINAL", "PRIMARY", plane]
    minute = 30 + spec.series_number
    time = f"{9 + minute // 60 % 15:02d}{minute % 60:02d}00"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study["StudyDate"]
    ds.StudyTime, ds.SeriesTime, ds.ContentTime = "093000", time, time
    ds.AccessionNumber, ds.Modality = study["AccessionNumber"], spec.modality
    ds.Manufacturer, ds.InstitutionName = "Demo", "Demo Hospital"
    ds.ReferringPhysicianName = "DEMO^REFERRER"
    ds.StudyDescription = study["StudyDescription"]
    if spec.description is not None:
        ds.SeriesDescription = spec.description
    ds.PatientName, ds.PatientID = study["PatientName"], study["PatientID"]
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.BodyPartExamined = _KINDS[spec.kind][2]
    ds.SliceThickness = _ds(spec.slice_thickness)
    if spec.modality == "CT":
        ds.KVP, ds.ConvolutionKernel = 120, "STANDARD"
    elif spec.modality == "MR":
        t1 = spec.kind != "brain_t2"
        ds.ScanningSequence, ds.SequenceVariant = "SE", "NONE"
        ds.MRAcquisitionType, ds.MagneticFieldStrength = "2D", 1.5
        ds.RepetitionTime, ds.EchoTime = (500, 15) if t1 else (4000, 100)
        ds.EchoTrainLength = 1 if t1 else 16
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study["StudyInstanceUID"]
    ds.StudyID, ds.SeriesNumber, ds.AcquisitionNumber = "1", spec.series_number, 1
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = list(CORONAL if spec.kind == "scout" else AXIAL)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = spec.rows, spec.columns
    ds.PixelSpacing = [_ds(spec.pixel_spacing)] * 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if hu or spec.multiframe or spec.modality != "MR":
        ds.RescaleIntercept, ds.RescaleSlope = -1024 if hu else 0, 1
        if spec.modality != "CT":
            ds.RescaleType = "HU" if hu else "US"
    return ds


def _pixels(
    spec: SeriesSpec, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    """Values (HU or MR signal) of every slice, and each slice's position."""
    table = _KINDS[spec.kind][1]
    n, sp = spec.slices, spec.pixel_spacing
    xs = (np.arange(spec.columns) - (spec.columns - 1) / 2) * sp
    offsets = (np.arange(n) - (n - 1) / 2) * spec.slice_thickness
    if spec.kind == "scout":  # coronal planes stacked along +y (the slice normal)
        frame = _scout(xs, _SCOUT_TOP_Z - np.arange(spec.rows) * sp)
        values = np.stack([_finish(frame.copy(), 8.0, rng) for _ in range(n)])
        return values, [(xs[0], y, _SCOUT_TOP_Z) for y in offsets]
    ys = (np.arange(spec.rows) - (spec.rows - 1) / 2) * sp
    zs = _KINDS[spec.kind][0] + offsets  # axial planes stacked along +z
    sigma = 10.0 if table is _HU else 12.0
    slices = [_finish(table[_anatomy(float(z), xs, ys)], sigma, rng) for z in zs]
    return np.stack(slices), [(xs[0], ys[0], z) for z in zs]


def _write_series(
    out_dir: Path, spec: SeriesSpec, index: int, study: dict[str, str], seed: int
) -> GeneratedSeries:
    rng = np.random.default_rng([seed, index])
    hu = _KINDS[spec.kind][1] is _HU
    values, positions = _pixels(spec, rng)
    raw = values + 1024.5 if hu else np.abs(values) + 0.5  # CT stores HU + 1024
    stored = np.clip(raw, 0, 4095).astype("<u2")
    ds = _series_dataset(spec, study, hu)
    study_uid = study["StudyInstanceUID"]
    ds.SeriesInstanceUID = series_uid = _uid(study_uid, "series", index)
    ds.FrameOfReferenceUID = _uid(study_uid, "frame-of-reference", spec.modality)
    ds.WindowCenter, ds.WindowWidth = _window(values, spec)
    if spec.multiframe:
        ds.NumberOfFrames = spec.slices
        ds.FrameIncrementPointer = 0x00182005  # SliceLocationVector
        ds.SliceLocationVector = [_ds(p[2]) for p in positions]
        frames = [stored]  # one instance holding every frame
    else:
        frames = list(stored)
    uids = [_uid(series_uid, "instance", i) for i in range(len(frames))]
    folder = out_dir / f"series_{spec.series_number:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{hashlib.sha1(u.encode()).hexdigest()[:16]}.dcm" for u in uids]
    for i in map(int, rng.permutation(len(frames))):  # shuffled on disk too
        ds.SOPInstanceUID, ds.InstanceNumber = uids[i], i + 1
        ds.ImagePositionPatient = [_ds(v) for v in positions[i]]
        ds.SliceLocation = _ds(positions[i][1 if spec.kind == "scout" else 2])
        ds.add_new(0x7FE00010, "OW", frames[i].tobytes())
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = uids[i]
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(files[i], enforce_file_format=True)
    number, desc = spec.series_number, spec.description
    return GeneratedSeries(
        series_uid, number, desc, spec.modality, spec.slices, tuple(files), tuple(uids)
    )


def generate_study(
    out_dir: Path,
    specs: Sequence[SeriesSpec] = DEFAULT_DEMO,
    *,
    patient_name: str = "DEMO^PATIENT",
    patient_id: str = "DEMO0001",
    study_description: str = "Demo CT/MR study",
    accession: str = "DEMO0001",
    study_date: str = "20260115",
    seed: int = 0,
) -> GeneratedStudy:
    """Write one synthetic study, one subfolder per series.

    Parameters
    ----------
    out_dir
        Folder to write into (created when missing); series go to
        ``out_dir/series_NNN`` with NNN the series number.
    specs
        The series to generate; series numbers should be unique.
    patient_name, patient_id, study_description, accession, study_date
        Patient and study tags.
    seed
        The same seed, patient/study arguments and specs give the same UIDs
        and pixels; another seed gives a distinct study.

    Returns
    -------
    GeneratedStudy
        Its UIDs, and each series' files and instance UIDs in display order.
    """
    specs = tuple(specs)
    study_uid = _uid("study", patient_id, accession, study_date, seed, repr(specs))
    study = {
        "PatientName": patient_name,
        "PatientID": patient_id,
        "StudyDate": study_date,
        "StudyDescription": study_description,
        "AccessionNumber": accession,
        "StudyInstanceUID": study_uid,
    }
    out = Path(out_dir)
    series = [_write_series(out, s, i, study, seed) for i, s in enumerate(specs)]
    return GeneratedStudy(study_uid, patient_id, tuple(series))


def _has_dicom(folder: Path) -> bool:
    """Any ``*.dcm`` outside hidden folders (which the embedded store skips too)."""
    for f in folder.rglob("*.dcm"):
        if not any(part.startswith(".") for part in f.relative_to(folder).parts):
            return True
    return False


def ensure_demo_study(dicom_dir: Path) -> GeneratedStudy | None:
    """Write :data:`DEFAULT_DEMO` into ``dicom_dir/demo`` if it holds no DICOM yet.

    Parameters
    ----------
    dicom_dir
        The app's DICOM folder (created when missing).

    Returns
    -------
    GeneratedStudy or None
        The study written, or None when the folder already had ``*.dcm`` files
        (or another process wrote the demo at the same time).

    Notes
    -----
    The study is generated in a hidden temporary folder and renamed into
    place, so concurrent workers and crashes never leave half a study behind.
    """
    dicom_dir = Path(dicom_dir)
    dicom_dir.mkdir(parents=True, exist_ok=True)
    if _has_dicom(dicom_dir):
        return None
    target = dicom_dir / "demo"
    tmp = Path(tempfile.mkdtemp(prefix=".demo-tmp-", dir=dicom_dir))
    try:
        study = generate_study(tmp)
        try:
            tmp.rename(target)
        except OSError:  # "demo" exists and is not empty: someone else won
            return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    moved = [
        dataclasses.replace(
            s, files=tuple(target / f.relative_to(tmp) for f in s.files)
        )
        for s in study.series
    ]
    return dataclasses.replace(study, series=tuple(moved))


def many_series_specs(n: int = 20) -> tuple[SeriesSpec, ...]:
    """Specs of an ``n``-series benchmark study: small, mixed sizes and kinds.

    Parameters
    ----------
    n
        Number of series; series numbers are 1..n.

    Returns
    -------
    tuple of SeriesSpec
        Cycles CT/MR/scout/multi-frame templates; series 6 has no description.
    """
    templates = (
        SeriesSpec("CT Thorax", "CT", 0, 16, 256, 256, 5.0, 1.4, "thorax"),
        SeriesSpec("MR T1 brain", "MR", 0, 12, 256, 256, 5.0, 0.9, "brain_t1"),
        SeriesSpec("CT Abdomen", "CT", 0, 8, 512, 512, 5.0, 0.75, "abdomen"),
        SeriesSpec("CT Scout", "CT", 0, 1, 256, 256, 2.0, 2.0, "scout"),
        SeriesSpec("MR T2 brain", "MR", 0, 12, 128, 128, 5.0, 1.8, "brain_t2"),
        SeriesSpec("CT Head", "CT", 0, 10, 256, 256, 5.0, 0.9, "head"),
        SeriesSpec(
            "MR T1 multi-frame", "MR", 0, 8, 128, 128, 8.0, 1.8, "brain_t1", True
        ),
    )
    specs = []
    for i in range(n):
        t = templates[i % len(templates)]
        desc = None if i == 5 else f"{t.description} #{i + 1}"
        specs.append(dataclasses.replace(t, description=desc, series_number=i + 1))
    return tuple(specs)
