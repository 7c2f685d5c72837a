"""Load a series from the configured PACS into a numpy volume, as the app does.

Run from the repository root; with no ``ORTHANC_URL`` it uses the embedded
store in ``DICOM_DIR`` (``var/dicom``) and writes the demo study there first,
so it works on a fresh machine with no Orthanc::

    .venv/bin/python examples/load_series.py
    .venv/bin/python examples/load_series.py --series 1.2.3... --image 10 --out ct.png

It prints the volume's shape, voxel spacing and value range (Hounsfield units
for CT) and writes one slice, windowed as the viewer opens it, to a PNG
(``var/slice.png`` unless ``--out``; pillow, no plotting library needed). The
settings are the app's own (``settings.py``, ``.env.example``). The ``# %%``
cells run one by one in Jupyter or VS Code as well.
"""

# %% Set-up: the repository on the path, the PACS the app would use
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] if "__file__" in globals() else Path.cwd()
sys.path.insert(0, str(ROOT))

from services import analysis, imaging  # noqa: E402
from services.pacs import open_pacs  # noqa: E402
from settings import Settings  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--study", default="", help="StudyInstanceUID (default: first)")
parser.add_argument("--series", default="", help="SeriesInstanceUID (default: a CT)")
parser.add_argument("--image", type=int, default=0, help="1-based (default: middle)")
parser.add_argument("--out", default=str(ROOT / "var" / "slice.png"), help="PNG")
args, _ = parser.parse_known_args()  # (a notebook kernel adds its own arguments)

settings = Settings.from_env()
if settings.backend == "embedded" and settings.demo_study:
    from services.demo import ensure_demo_study

    ensure_demo_study(settings.dicom_dir)  # does nothing when DICOM files exist
pacs = open_pacs(**settings.pacs_kwargs())
print(f"PACS: {pacs.name}")

# %% Pick a series: the one asked for, else the first CT with several images
studies = pacs.find_studies()
if not studies:
    sys.exit("The PACS holds no study.")
study = next((s for s in studies if s.study_uid == args.study), None) or studies[0]
if args.study and study.study_uid != args.study:
    sys.exit(f"No study {args.study} in the PACS.")
series_list = pacs.list_series(study.study_uid)
if args.series:
    series = next((s for s in series_list if s.series_uid == args.series), None)
    if series is None:
        sys.exit(f"No series {args.series} in study {study.study_uid}.")
else:
    series = next(
        (s for s in series_list if s.modality == "CT" and s.image_count > 1),
        next((s for s in series_list if s.image_count > 1), series_list[0]),
    )
print(f"Study {study.study_uid} ({study.study_description or 'no description'})")
print(f"Series #{series.series_number} {series.modality} {series.series_description!r}")

# %% The volume: (slices, rows, columns) float32, modality values
vol = analysis.load_volume(pacs, study.study_uid, series.series_uid)
dz, dy, dx = vol.spacing
whole = analysis.volume_stats(vol.pixels)
print(f"shape {vol.pixels.shape} (slices, rows, columns), dtype {vol.pixels.dtype}")
print(f"spacing {dz} x {dy} x {dx} mm (between slices, rows, columns)")
print(f"{vol.unit} range {whole.min:g} .. {whole.max:g}, mean {whole.mean:.1f}")

# %% One slice to a PNG, windowed as the viewer opens it
n = args.image or len(vol.images) // 2 + 1
if not 1 <= n <= len(vol.images):
    sys.exit(f"--image must be 1..{len(vol.images)}")
pixels = vol.pixels[n - 1]
meta = pacs.get_instance_meta(vol.images[n - 1].instance_id)
center, width = analysis.image_window(meta, pixels)
png = imaging.encode(imaging.to_8bit(pixels, center, width, meta.photometric))
out = Path(args.out)
out.parent.mkdir(parents=True, exist_ok=True)
out.write_bytes(png)
print(f"image {n} of {len(vol.images)}, window C {center:g} / W {width:g} -> {out}")
