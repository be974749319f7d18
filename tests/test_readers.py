"""Readers: values as stored, DICOM and NIfTI conventions, and one clear InputError per kind of bad file.

Fixtures are written into tmp_path by each test; expected values come from the arrays written, from formulas
(luma weights, rescale, MONOCHROME1 mirror, NIfTI display orientation) or from an independent decoder."""
import csv
import gzip
import struct
import tracemalloc
import zlib

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, MRImageStorage, RLELossless, generate_uid

from asemble_jax.data import readers
from asemble_jax.errors import InputError


def _raises_for(path, *fragments, reader=readers.read_image, **kwargs):
    with pytest.raises(InputError) as caught:
        reader(path, **kwargs)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


# ---------------------------------------------------------------- raster images

def test_png_8_and_16_bit_keep_their_values(tmp_path):
    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, (40, 30), dtype=np.uint8)
    sixteen = rng.integers(0, 65536, (40, 30), dtype=np.uint16)
    Image.fromarray(eight).save(tmp_path / "eight.png")
    Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
    for name, expected in (("eight.png", eight), ("sixteen.png", sixteen)):
        pixels = readers.read_image(tmp_path / name)
        assert pixels.dtype == np.float32 and pixels.shape == (40, 30)
        np.testing.assert_array_equal(pixels, expected.astype(np.float32))


def test_tiff_16_bit_float_and_multi_page(tmp_path):
    rng = np.random.default_rng(1)
    sixteen = rng.integers(0, 65536, (24, 20), dtype=np.uint16)
    real = rng.normal(100.0, 30.0, (24, 20)).astype(np.float32)
    Image.fromarray(sixteen).save(tmp_path / "sixteen.tif")
    Image.fromarray(real).save(tmp_path / "real.tif")
    pages = [Image.fromarray(sixteen), Image.fromarray(sixteen[::-1].copy())]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    np.testing.assert_array_equal(readers.read_image(tmp_path / "sixteen.tif"), sixteen)
    np.testing.assert_array_equal(readers.read_image(tmp_path / "real.tif"), real)
    stack = readers.read_image(tmp_path / "pages.tif")
    assert stack.shape == (2, 24, 20)
    np.testing.assert_array_equal(stack[1], sixteen[::-1])


def test_colour_becomes_bt601_luma_and_alpha_is_ignored(tmp_path):
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (16, 18, 4), dtype=np.uint8)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    red, green, blue = (rgba[..., c].astype(np.float64) for c in range(3))
    expected = 0.299 * red + 0.587 * green + 0.114 * blue
    for name in ("rgb.png", "rgba.png"):
        np.testing.assert_allclose(readers.read_image(tmp_path / name), expected, atol=1e-3)


def test_jpeg_matches_an_independent_decoder(tmp_path):
    rng = np.random.default_rng(3)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (64, 48)).astype(np.uint8), (9, 9), 3)
    path = tmp_path / "slice.jpg"
    assert cv2.imwrite(str(path), smooth, [cv2.IMWRITE_JPEG_QUALITY, 95])
    opencv = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float32)
    # Two libjpeg builds may round the inverse DCT differently by one grey level, never more.
    assert np.abs(readers.read_image(path) - opencv).max() <= 1


def test_one_bit_image_is_refused(tmp_path):
    path = tmp_path / "bilevel.png"
    Image.fromarray(np.eye(16, dtype=bool)).save(path)
    _raises_for(path, "1-bit")


def test_missing_empty_and_non_image_files(tmp_path):
    _raises_for(tmp_path / "absent.png", "does not exist")
    (tmp_path / "empty.png").write_bytes(b"")
    _raises_for(tmp_path / "empty.png", "empty")
    (tmp_path / "notes.png").write_text("this is a radiology report, not an image\n" * 10)
    _raises_for(tmp_path / "notes.png", "not a recognised image")
    _raises_for(tmp_path, "not a regular file")
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 2), np.float32), np.eye(4)), tmp_path / "volume.nii")
    _raises_for(tmp_path / "volume.nii", "not a recognised image", "read_nifti_volume")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path, suffix):
    rng = np.random.default_rng(4)
    path = tmp_path / f"slice{suffix}"
    assert cv2.imwrite(str(path), rng.integers(0, 256, (128, 128), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _raises_for(path, "truncated or corrupt")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    # A valid PNG header claiming 60000 x 60000 pixels followed by pixel data that could never decode: only a
    # reader that checks the size before decoding reports the size rather than the broken data.
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _png_chunk(b"IEND", b""))
    _raises_for(path, "exceeds the limit", "3600000000")


def test_pixel_limit_is_configurable_and_too_small_images_are_refused(tmp_path):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "square.png")
    _raises_for(tmp_path / "square.png", "exceeds the limit", max_pixels=64 * 64 - 1)
    assert readers.read_image(tmp_path / "square.png", max_pixels=64 * 64).shape == (64, 64)
    Image.fromarray(np.zeros((4, 64), np.uint8)).save(tmp_path / "sliver.png")
    _raises_for(tmp_path / "sliver.png", "too small")


def test_nan_only_image_is_refused(tmp_path):
    path = tmp_path / "nan.tif"
    Image.fromarray(np.full((16, 16), np.nan, np.float32)).save(path)
    _raises_for(path, "no finite pixel values")


# ---------------------------------------------------------------- DICOM

def _mr_dataset(pixels: np.ndarray, *, photometric="MONOCHROME2", bits_stored=12, signed=False, **tags) -> Dataset:
    """A minimal MR image object holding `pixels` (H, W) or (frames, H, W) as stored values."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.SeriesInstanceUID = tags.pop("SeriesInstanceUID", "1.2.826.0.1.3680043.8.498.1")
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def _stored(shape, seed, high=4096, low=0):
    return np.random.default_rng(seed).integers(low, high, shape)


def test_dicom_rescale_slope_and_intercept(tmp_path):
    stored = _stored((20, 24), 5)
    path = tmp_path / "rescaled.dcm"
    _mr_dataset(stored, RescaleSlope=2.5, RescaleIntercept=-100).save_as(path, enforce_file_format=True)
    np.testing.assert_allclose(readers.read_image(path), 2.5 * stored - 100, rtol=1e-6)


def test_dicom_monochrome1_is_mirrored_over_the_stored_range(tmp_path):
    stored = _stored((20, 24), 6)
    unsigned = tmp_path / "mono1.dcm"
    _mr_dataset(stored, photometric="MONOCHROME1", RescaleSlope=2, RescaleIntercept=10).save_as(
        unsigned, enforce_file_format=True)
    np.testing.assert_allclose(readers.read_image(unsigned), 2 * (4095 - stored) + 10)
    signed_stored = _stored((20, 24), 7, high=2048, low=-2048)
    signed = tmp_path / "mono1_signed.dcm"
    _mr_dataset(signed_stored, photometric="MONOCHROME1", signed=True).save_as(signed, enforce_file_format=True)
    np.testing.assert_allclose(readers.read_image(signed), -1 - signed_stored)


def test_dicom_multi_frame_with_per_frame_rescale(tmp_path):
    stored = _stored((3, 16, 20), 8)
    ds = _mr_dataset(stored)
    groups = []
    for slope in (1.0, 2.0, 3.0):
        transformation = Dataset()
        transformation.RescaleSlope, transformation.RescaleIntercept = slope, -slope
        group = Dataset()
        group.PixelValueTransformationSequence = [transformation]
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = groups
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    pixels = readers.read_image(path)
    assert pixels.shape == (3, 16, 20)
    for frame, slope in enumerate((1.0, 2.0, 3.0)):
        np.testing.assert_allclose(pixels[frame], slope * stored[frame] - slope)


def test_dicom_rle_compressed_reads_losslessly(tmp_path):
    stored = _stored((32, 32), 9)
    ds = _mr_dataset(stored)
    ds.compress(RLELossless, stored.astype(np.uint16))
    path = tmp_path / "rle.dcm"
    ds.save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(readers.read_image(path), stored)


def test_dicom_rgb_becomes_bt601_luma(tmp_path):
    rgb = np.random.default_rng(22).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    ds = _mr_dataset(rgb[..., 0], photometric="RGB")
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = rgb.tobytes()
    path = tmp_path / "colour.dcm"
    ds.save_as(path, enforce_file_format=True)
    red, green, blue = (rgb[..., c].astype(np.float64) for c in range(3))
    np.testing.assert_allclose(readers.read_image(path), 0.299 * red + 0.587 * green + 0.114 * blue, atol=1e-3)


def test_dicom_without_preamble_is_still_read(tmp_path):
    stored = _stored((12, 14), 10)
    path = tmp_path / "acr_nema_style"
    ds = _mr_dataset(stored)
    del ds.file_meta
    ds.save_as(path, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(readers.read_image(path), stored)


def test_dicom_compressed_without_decoder_names_the_syntax(tmp_path):
    ds = _mr_dataset(_stored((16, 16), 11))
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\xd8\xff\xf7 not a real JPEG-LS stream"])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "jpegls.dcm"
    ds.save_as(path, enforce_file_format=True)
    if pydicom.pixels.get_decoder(JPEGLSLossless).is_available:
        _raises_for(path, "corrupt")
    else:
        _raises_for(path, "JPEG-LS Lossless", "no installed decoder", "pylibjpeg")


def test_dicom_bad_files(tmp_path):
    stored = _stored((64, 64), 12)
    whole = tmp_path / "whole.dcm"
    _mr_dataset(stored).save_as(whole, enforce_file_format=True)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(whole.read_bytes()[:-3000])
    _raises_for(truncated, "corrupt")

    no_pixels = _mr_dataset(stored)
    del no_pixels.PixelData
    no_pixels.save_as(tmp_path / "no_pixels.dcm", enforce_file_format=True)
    _raises_for(tmp_path / "no_pixels.dcm", "no pixel data")

    # A header claiming 50000 x 50000 pixels x 100 frames over 8 kB of data: refused on the header, not on the data.
    bomb = _mr_dataset(stored, NumberOfFrames=100)
    bomb.Rows = bomb.Columns = 50000
    bomb.save_as(tmp_path / "bomb.dcm", enforce_file_format=True)
    _raises_for(tmp_path / "bomb.dcm", "exceeds the limit")

    overlay_like = _mr_dataset(stored)
    overlay_like.BitsAllocated = 1
    overlay_like.save_as(tmp_path / "one_bit.dcm", enforce_file_format=True)
    _raises_for(tmp_path / "one_bit.dcm", "BitsAllocated 1")


def _write_series(folder, stored, numbers, **tags):
    folder.mkdir()
    for index, (number, pixels) in enumerate(zip(numbers, stored)):
        # File names deliberately out of slice order, as in real exports.
        _mr_dataset(pixels, InstanceNumber=number, **tags).save_as(
            folder / f"I{(7 * index) % len(numbers)}{index}", enforce_file_format=True)


def test_dicom_series_is_sorted_by_instance_number(tmp_path):
    stored = _stored((5, 16, 16), 13)
    numbers = [4, 2, 5, 1, 3]
    _write_series(tmp_path / "series", stored, numbers)
    (tmp_path / "series" / ".DS_Store").write_bytes(b"\0\1\2")
    volume = readers.read_dicom_series(tmp_path / "series")
    assert volume.shape == (5, 16, 16)
    for position, number in enumerate(sorted(numbers)):
        np.testing.assert_array_equal(volume[position], stored[numbers.index(number)])


def test_dicom_series_errors(tmp_path):
    _raises_for(tmp_path / "absent", "does not exist", reader=readers.read_dicom_series)
    (tmp_path / "empty").mkdir()
    _raises_for(tmp_path / "empty", "no DICOM files", reader=readers.read_dicom_series)

    _write_series(tmp_path / "repeated", _stored((2, 16, 16), 14), [1, 1])
    _raises_for(tmp_path / "repeated", "InstanceNumber repeated", reader=readers.read_dicom_series)

    _write_series(tmp_path / "mixed", _stored((2, 16, 16), 15), [1, 2])
    _mr_dataset(_stored((16, 16), 16), InstanceNumber=3, SeriesInstanceUID="1.2.3.4").save_as(
        tmp_path / "mixed" / "other", enforce_file_format=True)
    _raises_for(tmp_path / "mixed", "2 different series", reader=readers.read_dicom_series)

    _write_series(tmp_path / "sizes", _stored((2, 16, 16), 17), [1, 2])
    _mr_dataset(_stored((16, 20), 18), InstanceNumber=3).save_as(tmp_path / "sizes" / "wide",
                                                                 enforce_file_format=True)
    _raises_for(tmp_path / "sizes" / "wide", "16x20", reader=lambda _: readers.read_dicom_series(tmp_path / "sizes"))

    _write_series(tmp_path / "unnumbered", _stored((1, 16, 16), 19), [1])
    _mr_dataset(_stored((16, 16), 20)).save_as(tmp_path / "unnumbered" / "lost", enforce_file_format=True)
    _raises_for(tmp_path / "unnumbered" / "lost", "no valid InstanceNumber",
                reader=lambda _: readers.read_dicom_series(tmp_path / "unnumbered"))


def test_real_dicom_series_matches_an_independent_pydicom_read(shared_data):
    root = shared_data / "iaxspa_demo"
    if not (root / "MANIFEST.csv").is_file():
        pytest.skip(f"{root} has no MANIFEST.csv")
    with open(root / "MANIFEST.csv", newline="") as file:
        # Only the columns this test needs: the others are personal data and must never reach a log.
        rows = [{key: row[key] for key in ("path", "sequence", "instance_number", "rows", "cols")}
                for row in csv.DictReader(file)]
    for sequence in sorted({row["sequence"] for row in rows}):
        entries = sorted((row for row in rows if row["sequence"] == sequence), key=lambda r: int(r["instance_number"]))
        folders = {(root / row["path"]).parent for row in entries}
        assert len(folders) == 1
        volume = readers.read_dicom_series(folders.pop())
        assert volume.shape == (len(entries), int(entries[0]["rows"]), int(entries[0]["cols"]))
        for position, row in enumerate(entries):
            ds = pydicom.dcmread(root / row["path"])
            expected = ds.pixel_array * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
            if not np.array_equal(volume[position], expected):
                pytest.fail(f"{sequence} slice {position} differs from pydicom's pixels of {row['path']}")


# ---------------------------------------------------------------- NIfTI

def _write_nifti(path, volume, affine=np.eye(4), slope=None):
    image = nib.Nifti1Image(volume, affine)
    if slope is not None:
        image.header.set_slope_inter(*slope)
    nib.save(image, path)


def test_nifti_slices_are_shown_superior_up_and_never_reoriented(tmp_path):
    volume = np.zeros((12, 10, 3), np.int16)
    volume[2, 7, 1] = 500  # x = 2 (column), y = 7 (row counted from the bottom), slice 1
    flipped_axes = np.diag([-1.0, -1.0, 1.0, 1.0])
    _write_nifti(tmp_path / "identity.nii.gz", volume, slope=(2.0, 5.0))
    _write_nifti(tmp_path / "flipped.nii.gz", volume, affine=flipped_axes, slope=(2.0, 5.0))
    for name in ("identity.nii.gz", "flipped.nii.gz"):
        slices = readers.read_nifti_volume(tmp_path / name)
        assert slices.shape == (3, 10, 12) and slices.dtype == np.float32
        rows, columns = np.nonzero(slices[1] != 5.0)
        assert (rows.tolist(), columns.tolist()) == ([10 - 1 - 7], [2])
        assert slices[1, 10 - 1 - 7, 2] == 2.0 * 500 + 5.0


def test_nifti_two_d_and_singleton_fourth_dimension(tmp_path):
    plane = np.arange(16 * 12, dtype=np.float32).reshape(16, 12)
    _write_nifti(tmp_path / "plane.nii", plane)
    _write_nifti(tmp_path / "singleton.nii", plane[:, :, None, None])
    for name in ("plane.nii", "singleton.nii"):
        np.testing.assert_array_equal(readers.read_nifti_volume(tmp_path / name), np.flipud(plane.T)[None])


def test_nifti_bad_files(tmp_path):
    _write_nifti(tmp_path / "series.nii", np.zeros((16, 16, 2, 3), np.float32))
    _raises_for(tmp_path / "series.nii", "4-D", reader=readers.read_nifti_volume)

    _write_nifti(tmp_path / "nan.nii", np.full((16, 16, 2), np.nan, np.float32))
    _raises_for(tmp_path / "nan.nii", "no finite", reader=readers.read_nifti_volume)

    _write_nifti(tmp_path / "whole.nii.gz", np.random.default_rng(21).normal(size=(64, 64, 8)).astype(np.float32))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes((tmp_path / "whole.nii.gz").read_bytes()[:5000])
    _raises_for(truncated, "truncated or corrupt", reader=readers.read_nifti_volume)

    (tmp_path / "report.nii").write_text("not a volume\n" * 40)
    _raises_for(tmp_path / "report.nii", "NIfTI", reader=readers.read_nifti_volume)

    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 100))
    header.set_data_dtype(np.int16)
    with gzip.open(tmp_path / "bomb.nii.gz", "wb") as file:
        file.write(header.binaryblock + b"\0" * 4 + b"\0" * 1000)
    _raises_for(tmp_path / "bomb.nii.gz", "exceeds the limit", reader=readers.read_nifti_volume)


def test_real_nifti_matches_nibabel_in_display_orientation(shared_data):
    root = shared_data / "bone_mri"
    if not (root / "scans.csv").is_file():
        pytest.skip(f"{root} has no scans.csv")
    with open(root / "scans.csv", newline="") as file:
        scan = next(csv.DictReader(file))
    path = root / scan["path"]
    slices = readers.read_nifti_volume(path)
    columns, rows, count = (int(n) for n in scan["shape"].split("x"))
    assert slices.shape == (count, rows, columns)
    volume = nib.load(path).get_fdata()
    for k in range(count):
        np.testing.assert_allclose(slices[k], np.flipud(volume[:, :, k].T), rtol=1e-6, atol=1e-3)


# ---------------------------------------------------------------- limits, from the header (issue 18, item 7)

class _Decoded(Exception):
    """Raised by a decoder that a test forbids to run: nothing catches it."""


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if Pillow decodes pixel data, nibabel reads voxels or pydicom decodes pixels."""
    def refuse(*args, **kwargs):
        raise _Decoded("pixel data was decoded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "_get_scaled", refuse)
    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(refuse))


def test_the_no_decoding_fixture_catches_each_decoder(tmp_path, no_decoding):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "plain.png")
    _write_nifti(tmp_path / "plain.nii.gz", np.zeros((16, 16, 2), np.float32))
    _mr_dataset(_stored((16, 16), 4)).save_as(tmp_path / "plain.dcm", enforce_file_format=True)
    for path, reader in ((tmp_path / "plain.png", readers.read_image), (tmp_path / "plain.nii.gz",
                         readers.read_nifti_volume), (tmp_path / "plain.dcm", readers.read_image)):
        with pytest.raises(_Decoded):
            reader(path)


def _png_header_only(path, height, width):
    """A PNG whose header claims height x width 8-bit grey pixels, with almost no pixel data behind it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", zlib.compress(b"\0" * 100)) + _png_chunk(b"IEND", b""))


def _nifti_header_only(path, shape, dtype=np.int16, **fields):
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    for name, value in fields.items():
        header[name] = value
    with gzip.open(path, "wb") as file:
        file.write(header.binaryblock + b"\0" * 4 + b"\0" * 1000)


def test_an_8000_pixel_square_image_is_refused_from_its_header(tmp_path, no_decoding):
    # 64 million pixels is under max_pixels: only the side limit refuses it, and before Pillow decodes anything.
    _png_header_only(tmp_path / "big.png", 8000, 8000)
    _raises_for(tmp_path / "big.png", "8000x8000 slice exceeds the limit of 4096 pixels a side")
    _png_header_only(tmp_path / "wide.png", 8, 4097)
    _raises_for(tmp_path / "wide.png", "8x4097 slice exceeds the limit of 4096 pixels a side")
    _raises_for(tmp_path / "wide.png", "exceeds the limit of 1000 pixels a side", max_side=1000)


def test_side_and_slice_limits_are_configurable(tmp_path):
    Image.fromarray(np.full((40, 64), 9, np.uint8)).save(tmp_path / "plain.png")
    _raises_for(tmp_path / "plain.png", "40x64 slice exceeds the limit of 63 pixels a side", max_side=63)
    assert readers.read_image(tmp_path / "plain.png", max_side=64).shape == (40, 64)
    pages = [Image.fromarray(np.full((16, 16), k, np.uint16)) for k in range(3)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    _raises_for(tmp_path / "pages.tif", "image of 3 slices exceeds the limit of 2 (max_slices", max_slices=2)
    assert readers.read_image(tmp_path / "pages.tif", max_slices=3).shape == (3, 16, 16)
    _write_nifti(tmp_path / "volume.nii", np.zeros((16, 12, 5), np.float32))
    _raises_for(tmp_path / "volume.nii", "volume of 5 slices exceeds the limit of 4", reader=readers.read_nifti_volume,
                max_slices=4)
    _raises_for(tmp_path / "volume.nii", "16x12 slice exceeds the limit of 15 pixels a side",
                reader=readers.read_nifti_volume, max_side=15)
    frames = _mr_dataset(_stored((3, 16, 16), 5))
    frames.save_as(tmp_path / "frames.dcm", enforce_file_format=True)
    _raises_for(tmp_path / "frames.dcm", "image of 3 slices exceeds the limit of 2", max_slices=2)
    _raises_for(tmp_path / "frames.dcm", "exceeds the limit of 12 pixels a side", max_side=12)
    _write_series(tmp_path / "series", _stored((3, 16, 16), 6), [1, 2, 3])
    _raises_for(tmp_path / "series", "series of 3 slices exceeds the limit of 2", reader=readers.read_dicom_series,
                max_slices=2)
    for bad in ({"max_side": 4}, {"max_slices": 0}, {"max_pixels": -1}, {"max_side": 2.5}):
        with pytest.raises(ValueError, match="must be a whole number"):
            readers.read_image(tmp_path / "plain.png", **bad)


def test_nifti_sizes_are_refused_from_the_header_before_any_voxel_is_read(tmp_path, no_decoding):
    _nifti_header_only(tmp_path / "many.nii.gz", (64, 64, 2000))  # 8 million voxels: under max_pixels
    _raises_for(tmp_path / "many.nii.gz", "volume of 2000 slices exceeds the limit of 1024",
                reader=readers.read_nifti_volume)
    _nifti_header_only(tmp_path / "wide.nii.gz", (5000, 5000, 2))
    _raises_for(tmp_path / "wide.nii.gz", "5000x5000 slice exceeds the limit of 4096 pixels a side",
                reader=readers.read_nifti_volume)


def _gzip_zeros(file, count, chunk=2 ** 20):
    for start in range(0, count, chunk):
        file.write(bytes(min(chunk, count - start)))


def _peak_bytes(function):
    tracemalloc.start()
    try:
        function()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_nifti_gzip_bomb_in_the_header_extensions_is_refused_with_bounded_memory(tmp_path, no_decoding):
    # A plausible 64x64x4 header, but an extension of 200 MB of zeros (200 kB compressed) before the voxels:
    # nibabel would read the whole extension into memory before looking at the voxels.
    extension = 200 * 2 ** 20
    header = nib.Nifti1Header()
    header.set_data_shape((64, 64, 4))
    header.set_data_dtype(np.int16)
    header["vox_offset"] = 352 + extension
    path = tmp_path / "bomb.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as file:
        file.write(header.binaryblock + struct.pack("<4B", 1, 0, 0, 0) + struct.pack("<ii", extension, 0))
        _gzip_zeros(file, extension - 8 + 64 * 64 * 4 * 2)
    assert path.stat().st_size < 2 ** 20
    peak = _peak_bytes(lambda: _raises_for(path, f"header extensions of {extension} bytes exceed the limit",
                                           reader=readers.read_nifti_volume))
    assert peak < 8 * 2 ** 20, f"refusing the file took {peak} bytes"


def test_a_nifti_gzip_stream_is_only_decompressed_as_far_as_the_header_says(tmp_path):
    volume = np.arange(16 * 12 * 3, dtype=np.int16).reshape(16, 12, 3)
    image = nib.Nifti1Image(volume, np.eye(4))
    path = tmp_path / "trailing.nii.gz"
    with gzip.open(path, "wb", compresslevel=1) as file:
        file.write(image.to_bytes())
        _gzip_zeros(file, 100 * 2 ** 20)  # 100 MB more than the header declares, never decompressed
    peak = _peak_bytes(lambda: readers.read_nifti_volume(path))
    np.testing.assert_array_equal(readers.read_nifti_volume(path),
                                  np.stack([np.flipud(volume[:, :, k].T) for k in range(3)]))
    assert peak < 8 * 2 ** 20, f"reading the file took {peak} bytes"


def test_a_deflated_dicom_bomb_is_refused_with_bounded_memory(tmp_path, no_decoding):
    # 40 MB of pixel data deflated to 40 kB, behind a 64x64 header: pydicom would inflate all of it in memory.
    dataset = _mr_dataset(_stored((64, 64), 9))
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    dataset.PixelData = bytes(40 * 2 ** 20)
    path = tmp_path / "bomb.dcm"
    dataset.save_as(path, enforce_file_format=True)
    del dataset
    assert path.stat().st_size < 2 ** 20
    messages = []
    peak = _peak_bytes(lambda: messages.append(_raises_for(path, "deflated DICOM inflates to more than",
                                                           max_pixels=64 * 64)))
    assert peak < 8 * 2 ** 20, f"refusing the file took {peak} bytes"
    assert f"more than {readers.MAX_METADATA_BYTES + 4 * 64 * 64} bytes" in messages[0]


def test_a_small_deflated_dicom_is_read(tmp_path):
    stored = _stored((32, 24), 10)
    dataset = _mr_dataset(stored)
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    dataset.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(readers.read_image(tmp_path / "deflated.dcm"), stored)
