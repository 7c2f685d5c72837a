"""examples/: the data scientists' script runs on a fresh machine against the
embedded demo (no Orthanc) and writes what it says, checked against pydicom."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut

from settings import ROOT

SCRIPT = ROOT / "examples" / "load_series.py"


def run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORTHANC_")}
    env.update(
        DICOM_DIR=str(tmp_path / "dicom"),  # empty: the demo study is written
        CACHE_DIR=str(tmp_path / "cache"),
        DEMO_STUDY="1",
    )
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=tmp_path,  # as from anywhere: the script finds the repository itself
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ex001_load_series_on_the_embedded_demo(tmp_path):
    done = run(tmp_path, "--out", "thorax.png")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "PACS: embedded" in out
    assert "shape (40, 512, 512) (slices, rows, columns), dtype float32" in out
    assert "spacing 5.0 x 0.7 x 0.7 mm" in out

    # the demo's thorax series, read here with pydicom alone, in slice order
    files = [
        ds
        for ds in (pydicom.dcmread(f) for f in (tmp_path / "dicom").rglob("*.dcm"))
        if ds.get("SeriesDescription") == "CT Thorax 5mm"
    ]
    files.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    hu = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in files])
    assert hu.shape == (40, 512, 512)
    lo, hi, mean = re.search(r"HU range (\S+) \.\. (\S+), mean (\S+)", out).groups()
    assert (float(lo), float(hi)) == (hu.min(), hu.max())
    assert float(lo) < -900 and float(hi) > 500  # air and bone: really HU
    assert abs(float(mean) - hu.astype(np.float64).mean()) < 0.051

    # the PNG: the middle image (21 of 40) in its own window, 40 / 400
    assert "image 21 of 40, window C 40 / W 400 -> thorax.png" in out
    png = np.asarray(Image.open(tmp_path / "thorax.png"))
    assert png.shape == (512, 512) and png.dtype == np.uint8
    c, w = 40.0, 400.0
    expected = np.clip(((hu[20] - (c - 0.5)) / (w - 1) + 0.5) * 255, 0, 255)
    assert np.abs(png.astype(int) - expected.astype(np.uint8)).max() <= 1
    assert png.min() == 0 and png.max() == 255  # air black, bone white


def test_ex002_load_series_says_what_is_wrong(tmp_path):
    done = run(tmp_path, "--series", "1.2.3.4")
    assert done.returncode == 1
    assert re.search(r"No series 1\.2\.3\.4 in study [0-9.]+\.", done.stderr)
    done = run(tmp_path, "--image", "99", "--out", "never.png")
    assert done.returncode == 1 and "--image must be 1..40" in done.stderr
    assert not (tmp_path / "never.png").exists()
