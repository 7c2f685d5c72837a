"""Unit tests of the backend-independent image maths."""

import hashlib
import io
import random

import numpy as np
from PIL import Image

from services import imaging, orthanc_ids
from services.imaging import SliceKey


def axial(i: int, z: float, number: int, frames: int = 1) -> SliceKey:
    return SliceKey(
        f"id{i}", f"1.2.{i}", number, (0.0, 0.0, z), (1, 0, 0, 0, 1, 0), frames
    )


def test_img001_display_order_follows_position_not_input_order():
    slices = [axial(i, z=float(10 - i), number=i) for i in range(10)]
    random.Random(1).shuffle(slices)
    order = imaging.display_order(slices)
    assert [img.instance_id for img in order] == [f"id{i}" for i in range(9, -1, -1)]
    assert [img.image_number for img in order] == list(range(1, 11))


def test_img002_position_ties_break_on_instance_number_and_multiframe_expands():
    slices = [axial(1, 0.0, 2), axial(2, 0.0, 1, frames=3)]
    order = imaging.display_order(slices)
    assert [(i.instance_id, i.frame_index) for i in order] == [
        ("id2", 0),
        ("id2", 1),
        ("id2", 2),
        ("id1", 0),
    ]


def test_img003_tilted_orientation_projects_on_the_normal():
    # A gantry tilt: slices step along y and z; ordering must use the normal.
    iop = (1.0, 0.0, 0.0, 0.0, 0.9483237, -0.3173047)
    normal = np.cross(iop[:3], iop[3:])
    slices = [
        SliceKey(
            f"id{k}", f"1.{k}", 100 - k, tuple(normal * k * 5 + (0, k * 3, 0)), iop, 1
        )
        for k in range(6)
    ]
    assert [i.instance_id for i in imaging.display_order(slices[::-1])] == [
        f"id{k}" for k in range(6)
    ]


def test_img004_missing_geometry_falls_back_to_instance_number():
    slices = [SliceKey(f"id{n}", f"1.{n}", n, None, None, 1) for n in (3, 1, 2)]
    assert [i.instance_id for i in imaging.display_order(slices)] == [
        "id1",
        "id2",
        "id3",
    ]


def test_img005_window_maps_range_and_inverts_monochrome1():
    hu = np.array([[-1000, -160, 40, 240, 3000]], dtype=np.float32)
    out = imaging.apply_window(hu, center=40, width=400)
    assert out[0, 0] == 0 and out[0, -1] == 255
    assert abs(int(out[0, 2]) - 128) <= 1
    assert out[0, 1] <= 1 and out[0, 3] >= 254
    inv = imaging.to_8bit(hu, 40, 400, "MONOCHROME1")
    assert np.array_equal(inv, 255 - out)


def test_img006_encode_png_and_jpeg_with_size_bound():
    image = (np.arange(256 * 128) % 256).astype(np.uint8).reshape(128, 256)
    png = Image.open(io.BytesIO(imaging.encode(image, "png")))
    assert png.size == (256, 128) and np.array_equal(np.asarray(png), image)
    jpeg = Image.open(io.BytesIO(imaging.encode(image, "jpeg", size=64)))
    assert jpeg.format == "JPEG" and jpeg.size == (64, 32)


def test_img007_orthanc_ids_are_dashed_sha1_of_uids():
    expected = hashlib.sha1(b"P1|1.2.3|1.2.3.4").hexdigest()
    sid = orthanc_ids.series_id("P1", "1.2.3", "1.2.3.4")
    assert sid.replace("-", "") == expected
    assert orthanc_ids.is_orthanc_id(sid)
    assert not orthanc_ids.is_orthanc_id("../etc/passwd")


def test_img008_plain_frames_read_straight_are_pydicoms():
    """native_frame (a frame's first view from a plain file) gives exactly
    what pydicom's decoder and compact give, for every codec variant it takes
    and the real series; it leaves the others to the decoder."""
    import pydicom

    from services.imagecache import compact
    from tests.corpus import CODECS, SHARED_DATA, package_file

    files = [package_file(name) for name in CODECS]
    files += sorted(SHARED_DATA.glob("*/*.dcm"))[::40]
    taken = set()
    for path in files:
        ds = pydicom.dcmread(path)
        for i in range(int(getattr(ds, "NumberOfFrames", 1) or 1)):
            fast = imaging.native_frame(ds, i)
            if fast is None:
                break
            decoded = compact(imaging.decode_frame(ds, i, path.name))
            assert fast.dtype == decoded.dtype == np.int16, path.name
            assert np.array_equal(fast, decoded), (path.name, i)
            taken.add(path.name)
    # CT with an intercept, implicit VR, 12 of 16 bits in 10 frames, real CT
    assert {"CT_small.dcm", "MR_small_implicit.dcm", "emri_small.dcm"} <= taken
    assert any(name.endswith(".dcm") and name[0].isdigit() for name in taken)
    assert not {"MR_small_bigendian.dcm", "SC_rgb.dcm", "JPEG-LL.dcm"} & taken
    # signed 12 bits with other bits set above them: dropped, sign extended
    ds = pydicom.dcmread(package_file("CT_small.dcm"))
    stored = np.frombuffer(ds.PixelData, "<i2") & 0x0FFF
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = (stored | 0x5000).astype("<u2").tobytes()
    fast = imaging.native_frame(ds, 0)
    assert fast is not None and fast.min() < -1024  # negative 12-bit values
    assert np.array_equal(fast, compact(imaging.decode_frame(ds, 0, "12 bits")))
    # an intercept that takes values out of int16: the decoder's float32
    ds.RescaleIntercept = 40000
    assert imaging.native_frame(ds, 0) is None
