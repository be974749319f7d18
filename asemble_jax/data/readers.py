"""Raw MR pixel values from image files: PNG/JPEG/TIFF (and anything else Pillow decodes), DICOM, NIfTI.

Every reader returns float32 values as stored in the file, after the transforms that give them meaning and
nothing else (no windowing, no resizing): `asemble_jax.data.preprocess` does the rest.

- Raster images (Pillow): 8- and 16-bit greyscale and 32-bit integer/float TIFF keep their values; colour becomes
  grey with the ITU-R BT.601 luma weights (0.299 R + 0.587 G + 0.114 B, as OpenCV and Pillow use) without
  rounding; Pillow reads 16-bit colour as 8-bit, which is fine for the screenshots such files are. An alpha
  channel is ignored. 1-bit images are refused: they carry no grey levels. A multi-page TIFF gives
  (pages, H, W).
- DICOM (pydicom): the modality LUT or Rescale Slope/Intercept (top level, or per frame for enhanced
  multi-frame objects) is applied. MONOCHROME1 is inverted on the stored values before rescaling, as
  (lowest + highest value that Bits Stored allows) - value, so that bright means high signal as in MONOCHROME2,
  and every slice of a series is inverted the same way whatever its content. Multi-frame objects give
  (frames, H, W). Compressed transfer syntaxes decode where pydicom has a decoder installed (RLE always; JPEG
  baseline and JPEG 2000 through Pillow; JPEG lossless and JPEG-LS need pylibjpeg or gdcm); otherwise the error
  names the missing packages.
- NIfTI (nibabel): (slices, H, W) with slice k shown as np.flipud(vol[:, :, k].T), superior up for the bone_mri
  scans. The volume is never reoriented with as_closest_canonical: oblique acquisitions report different axis
  codes for the same array layout, and reorienting would scramble axes between patients.

Any file that cannot be used raises `InputError` ('<path>: <problem>'). Sizes are checked from the header before
any pixel is decoded or decompressed, so a small file that claims a huge image (a decompression bomb) is refused
cheaply. Three limits, keyword arguments of every reader, bound what one call may read:

- `max_pixels` (DEFAULT_MAX_PIXELS): the total number of values a call may return (frames included);
- `max_side` (DEFAULT_MAX_SIDE): the longer side of any slice, in pixels;
- `max_slices` (DEFAULT_MAX_SLICES): slices of a NIfTI volume, frames of a DICOM, pages of a TIFF, files of a series.

Sizes come from the header: Pillow's Image.open (which reads only the header), the NIfTI header (parsed from its
first bytes, before nibabel reads extensions or voxels) and DICOM Rows/Columns/NumberOfFrames (before
pixel_array). Compressed streams are bounded too: a .nii.gz is decompressed only as far as the header says the
voxels end, and its header extensions may not exceed MAX_METADATA_BYTES; a deflated DICOM is refused, by
inflating it in small pieces, if it inflates to more than MAX_METADATA_BYTES plus 4 bytes per allowed pixel.
Header values reach an error message only as these numbers.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import os
import pathlib
import struct
import warnings
import zlib

import nibabel as nib
import numpy as np
import pydicom
import pydicom.config
import pydicom.dataset
import pydicom.uid
import pydicom.errors
import pydicom.filereader
import pydicom.pixels
from PIL import Image, UnidentifiedImageError

from asemble_jax.errors import InputError

# 8192 x 8192, 256 MiB as float32: far above any MR slice or volume we expect, and below Pillow's own
# decompression-bomb threshold, so Pillow never warns before this module refuses.
DEFAULT_MAX_PIXELS = 8192 * 8192
# MR slices are acquired at a few hundred pixels a side and exported or screenshotted at up to a couple of
# thousand; past 4096 a file is not an MR slice, and preprocessing it would cost tens of seconds (the body crop's
# morphology grows with the side as well as the area).
DEFAULT_MAX_SIDE = 4096
# An MR series has tens to a few hundred slices; a file with more is not one series of slices.
DEFAULT_MAX_SLICES = 1024
# Below this many pixels a side a file is an icon or a mask fragment, not a scan.
MIN_SIDE = 8
# NIfTI header extensions and DICOM elements other than the pixels are metadata: kilobytes, rarely megabytes.
MAX_METADATA_BYTES = 16 * 2 ** 20

_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_GREY_MODES = {"L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_GREY_WITH_ALPHA_MODES = {"LA", "La"}
_COLOUR_MODES = {"P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_MONOCHROME = {"MONOCHROME1", "MONOCHROME2"}
_COLOUR_PHOTOMETRICS = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR"}
# Pillow and pydicom raise a spread of types for damaged files; all of them mean "this file is unusable".
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, AttributeError,
                  NotImplementedError, RuntimeError, struct.error, zlib.error)
_NIFTI_ERRORS = _DECODE_ERRORS + (nib.spatialimages.HeaderDataError, nib.filebasedimages.ImageFileError)
# sizeof_hdr -> (header class, image class) of single-file NIfTI.
_NIFTI_KINDS = {348: (nib.Nifti1Header, nib.Nifti1Image), 540: (nib.Nifti2Header, nib.Nifti2Image)}
_NIFTI_SINGLE_FILE_MAGIC = {b"n+1", b"n+2"}
_GZIP_MAGIC = b"\x1f\x8b"
_STREAM_ERRORS = (OSError, EOFError, zlib.error)
_INFLATE_CHUNK = 2 ** 20


class _Limits:
    """The three limits of one call, checked once."""

    def __init__(self, max_pixels: int, max_side: int, max_slices: int):
        for name, value, least in (("max_pixels", max_pixels, 1), ("max_side", max_side, MIN_SIDE),
                                   ("max_slices", max_slices, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}")
        self.pixels, self.side, self.slices = int(max_pixels), int(max_side), int(max_slices)


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int = DEFAULT_MAX_SIDE,
               max_slices: int = DEFAULT_MAX_SLICES) -> np.ndarray:
    """float32 (H, W), or (frames, H, W) for multi-frame DICOM and multi-page TIFF, from a raster or DICOM file."""
    limits = _Limits(max_pixels, max_side, max_slices)
    _check_file(path)
    with open(path, "rb") as file:
        head = file.read(132)
    if head[128:132] != b"DICM":
        try:
            return _read_raster(path, limits)
        except _NotRaster:
            pass
    with _quiet_dicom():
        _check_inflated_size(path, limits)
        if head[128:132] == b"DICM":
            return _dicom_pixels(_open_dicom(path), path, limits)
        # Old ACR-NEMA style files have no preamble: only a forced parse that finds pixel data counts as DICOM.
        try:
            dataset = _open_dicom(path, force=True)
        except InputError:
            dataset = None
        if dataset is None or "PixelData" not in dataset or "Rows" not in dataset:
            hint = "; NIfTI volumes are read with read_nifti_volume" if ".nii" in pathlib.Path(path).name else ""
            raise InputError(path, f"not a recognised image (PNG, JPEG, TIFF or DICOM){hint}")
        return _dicom_pixels(dataset, path, limits)


def read_dicom_series(folder: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                      max_side: int = DEFAULT_MAX_SIDE, max_slices: int = DEFAULT_MAX_SLICES) -> np.ndarray:
    """float32 (slices, H, W) from a folder holding one single-frame DICOM series, sorted by InstanceNumber.

    Hidden files and DICOMDIR indexes are ignored; every other file must be a slice of the same series.
    """
    limits = _Limits(max_pixels, max_side, max_slices)
    folder_path = pathlib.Path(folder)
    if not folder_path.is_dir():
        raise InputError(folder, "folder does not exist" if not folder_path.exists() else "not a folder")
    paths = sorted(p for p in folder_path.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR")
    if not paths:
        raise InputError(folder, "no DICOM files in the folder")
    _check_slices(folder, len(paths), limits, "series")
    with _quiet_dicom():
        return _read_series(folder, paths, limits)


def _read_series(folder: str | os.PathLike, paths: list[pathlib.Path], limits: _Limits) -> np.ndarray:
    slices = []
    for path in paths:
        _check_file(path)
        _check_inflated_size(path, limits)
        dataset = _open_dicom(path)
        try:
            number = int(dataset.InstanceNumber)
        except (AttributeError, TypeError, ValueError):
            raise InputError(path, "DICOM slice has no valid InstanceNumber, so its place in the series is "
                                   "unknown") from None
        slices.append((number, path, dataset))
    series_uids = {str(dataset.get("SeriesInstanceUID", "")) for _, _, dataset in slices}
    if len(series_uids) > 1:
        raise InputError(folder, f"holds {len(series_uids)} different series; put each series in its own folder")
    slices.sort(key=lambda entry: entry[0])
    numbers = [number for number, _, _ in slices]
    if len(set(numbers)) != len(numbers):
        repeated = sorted({n for n in numbers if numbers.count(n) > 1})
        raise InputError(folder, f"InstanceNumber repeated across files: {repeated[:5]}")
    total = sum(_dicom_pixel_count(dataset, path, limits) for _, path, dataset in slices)
    _check_pixel_count(folder, total, limits, "series")
    arrays = []
    for _, path, dataset in slices:
        pixels = _dicom_pixels(dataset, path, limits)
        if pixels.ndim != 2:
            raise InputError(path, "multi-frame file inside a series folder; read it with read_image")
        if arrays and pixels.shape != arrays[0].shape:
            raise InputError(path, f"slice is {_shape_text(pixels.shape)} but the series is "
                                   f"{_shape_text(arrays[0].shape)}")
        arrays.append(pixels)
    return np.stack(arrays)


def read_nifti_volume(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                      max_side: int = DEFAULT_MAX_SIDE, max_slices: int = DEFAULT_MAX_SLICES) -> np.ndarray:
    """float32 (slices, H, W): slice k of the stored volume as np.flipud(vol[:, :, k].T), scaling applied.

    Single-file NIfTI-1 or NIfTI-2 (.nii, or gzip-compressed .nii.gz). The header is parsed from the file's first
    bytes and every limit checked on it before nibabel reads anything more; then only the bytes up to the end of
    the voxels the header declares are read (decompressed), so a gzip bomb costs no more than the limits allow."""
    limits = _Limits(max_pixels, max_side, max_slices)
    _check_file(path)
    header, image_class = _nifti_header(path)
    full_shape = tuple(int(n) for n in header.get_data_shape())
    shape = full_shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3:
        raise InputError(path, f"{len(full_shape)}-D NIfTI of shape {full_shape}: only 2-D and 3-D volumes are "
                               "supported")
    _check_pixel_count(path, int(np.prod(shape)), limits, "volume")
    _check_sides(path, shape[:2], limits)
    _check_slices(path, shape[2], limits, "volume")
    stored = np.dtype(header.get_data_dtype())
    if stored.kind not in "biuf":
        raise InputError(path, f"unsupported NIfTI data type {stored} (expected integer or real voxels)")
    header_bytes = int(header.sizeof_hdr) + 4
    offset = max(int(header.get_data_offset()), header_bytes)
    if offset - header_bytes > MAX_METADATA_BYTES:
        raise InputError(path, f"header extensions of {offset - header_bytes} bytes exceed the limit of "
                               f"{MAX_METADATA_BYTES} (refused before reading them)")
    try:
        data = _leading_bytes(path, offset + int(np.prod(shape)) * stored.itemsize)
        image = image_class.from_bytes(data)
        volume = np.asarray(image.get_fdata(dtype=np.float32)).reshape(shape)
    except _NIFTI_ERRORS as error:
        raise InputError(path, f"truncated or corrupt voxel data ({_reason(error)})") from None
    del image, data
    _check_finite(path, volume)
    return np.ascontiguousarray(volume.transpose(2, 1, 0)[:, ::-1, :])


def _nifti_header(path: str | os.PathLike) -> tuple[nib.Nifti1Header, type[nib.Nifti1Image]]:
    """The NIfTI-1 or -2 header of a single-file NIfTI, from its first 540 (decompressed) bytes only: no extension
    is read, whatever the header claims."""
    try:
        block = _leading_bytes(path, max(_NIFTI_KINDS))
    except _STREAM_ERRORS as error:
        raise InputError(path, f"unreadable NIfTI header ({_reason(error)})") from None
    kind = None
    if len(block) >= 4:
        kind = next((_NIFTI_KINDS[size] for size in struct.unpack("<i", block[:4]) + struct.unpack(">i", block[:4])
                     if size in _NIFTI_KINDS and len(block) >= size), None)
    if kind is None:
        raise InputError(path, "not a NIfTI file (no NIfTI-1 or NIfTI-2 header)")
    header_class, image_class = kind
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = header_class.from_fileobj(io.BytesIO(block[:header_class.template_dtype.itemsize]))
    except _NIFTI_ERRORS as error:
        raise InputError(path, f"unreadable NIfTI header ({_reason(error)})") from None
    magic = bytes(header["magic"])[:3]
    if magic not in _NIFTI_SINGLE_FILE_MAGIC:
        raise InputError(path, "not a single-file NIfTI (.nii or .nii.gz); a .hdr/.img pair is not read")
    return header, image_class


def _leading_bytes(path: str | os.PathLike, size: int) -> bytes:
    """The first `size` bytes of the file (fewer if it is shorter), decompressed if it is gzip: never more is read
    or decompressed."""
    with open(path, "rb") as file:
        compressed = file.read(2) == _GZIP_MAGIC
        file.seek(0)
        if not compressed:
            return file.read(size)
        with gzip.GzipFile(fileobj=file) as stream:
            return stream.read(size)


@contextlib.contextmanager
def _quiet_dicom():
    """pydicom warns, and logs, about non-conformant header values quoting the values themselves (dates, ages,
    names): headers are personal data, so nothing of theirs may reach a log. Problems surface as InputError."""
    with pydicom.config.disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class _NotRaster(Exception):
    """Pillow does not recognise the file; it may still be a DICOM without the 128-byte preamble."""


def _check_file(path: str | os.PathLike) -> None:
    file_path = pathlib.Path(path)
    if not file_path.exists():
        raise InputError(path, "file does not exist")
    if not file_path.is_file():
        raise InputError(path, "not a regular file")
    if file_path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")


def _read_raster(path: str | os.PathLike, limits: _Limits) -> np.ndarray:
    try:
        with Image.open(path) as image:  # reads the header only
            width, height = image.size
            _check_pixel_count(path, width * height, limits, "image")
            _check_sides(path, (height, width), limits)
            pages = getattr(image, "n_frames", 1)
            _check_slices(path, pages, limits, "image")
            _check_pixel_count(path, width * height * pages, limits, "image")
            frames = []
            for page in range(pages):
                image.seek(page)
                if image.size != (width, height):
                    raise InputError(path, f"page {page} is {image.size[1]}x{image.size[0]}, page 0 is "
                                           f"{height}x{width}")
                frames.append(_grey_values(path, image))
    except UnidentifiedImageError:
        raise _NotRaster from None
    except Image.DecompressionBombError as error:
        raise InputError(path, f"image exceeds the limit of {limits.pixels} pixels, refused before decoding "
                               f"({_reason(error)})") from None
    except InputError:
        raise
    except _DECODE_ERRORS as error:
        raise InputError(path, f"truncated or corrupt image data ({_reason(error)})") from None
    pixels = frames[0] if pages == 1 else np.stack(frames)
    _check_finite(path, pixels)
    return pixels


def _grey_values(path: str | os.PathLike, image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in _GREY_MODES:
        return np.asarray(image).astype(np.float32)
    if mode in _GREY_WITH_ALPHA_MODES:
        return np.asarray(image.getchannel(0)).astype(np.float32)
    if mode in _COLOUR_MODES:
        return _luma(np.asarray(image.convert("RGB")))
    if mode == "1":
        raise InputError(path, "1-bit black-and-white image: no grey levels to read")
    raise InputError(path, f"unsupported pixel format {mode!r}")


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32) @ _LUMA_WEIGHTS


def _open_dicom(path: str | os.PathLike, force: bool = False) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, force=force)
    except pydicom.errors.InvalidDicomError:
        raise InputError(path, "not a DICOM file") from None
    except _DECODE_ERRORS as error:
        raise InputError(path, f"truncated or corrupt DICOM file ({_reason(error)})") from None


def _check_inflated_size(path: str | os.PathLike, limits: _Limits) -> None:
    """pydicom inflates a deflated DICOM whole, in memory, before reading a tag: inflate it here first, a piece at
    a time and counting, and refuse it once it passes what the largest allowed image (4 bytes a value) and
    MAX_METADATA_BYTES of other elements can take."""
    max_bytes = MAX_METADATA_BYTES + 4 * limits.pixels
    try:
        with open(path, "rb") as file:
            pydicom.filereader.read_preamble(file, True)
            # pydicom's own reader of the file meta group (private, stable since pydicom 1): it leaves the file at
            # the start of the dataset, where the deflated stream begins.
            meta = pydicom.filereader._read_file_meta_info(file)
            if meta.get("TransferSyntaxUID") != pydicom.uid.DeflatedExplicitVRLittleEndian:
                return
            inflater, total = zlib.decompressobj(-zlib.MAX_WBITS), 0
            while not inflater.eof and (chunk := file.read(_INFLATE_CHUNK)):
                while chunk and not inflater.eof:
                    total += len(inflater.decompress(chunk, _INFLATE_CHUNK))
                    chunk = inflater.unconsumed_tail
                    if total > max_bytes:
                        raise InputError(path, f"deflated DICOM inflates to more than {max_bytes} bytes (refused "
                                               "while inflating it: a decompression bomb)")
    except InputError:
        raise
    except (*_DECODE_ERRORS, pydicom.errors.InvalidDicomError):
        return  # pydicom.dcmread says what is wrong with the file


def _dicom_pixel_count(dataset: pydicom.Dataset, path: str | os.PathLike, limits: _Limits) -> int:
    if "PixelData" not in dataset:
        kinds = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in dataset]
        raise InputError(path, f"{kinds[0]} is not supported" if kinds else "DICOM file has no pixel data")
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        frames = int(dataset.get("NumberOfFrames", 1) or 1)
        samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise InputError(path, "DICOM header lacks valid Rows/Columns/NumberOfFrames") from None
    if frames < 1:
        raise InputError(path, f"NumberOfFrames is {frames}")
    count = rows * columns * frames * samples
    _check_pixel_count(path, count, limits, "image")
    _check_sides(path, (rows, columns), limits)
    _check_slices(path, frames, limits, "image")
    return count


def _dicom_pixels(dataset: pydicom.Dataset, path: str | os.PathLike, limits: _Limits) -> np.ndarray:
    _dicom_pixel_count(dataset, path, limits)
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in _MONOCHROME | _COLOUR_PHOTOMETRICS:
        raise InputError(path, f"unsupported PhotometricInterpretation {photometric!r}")
    bits_allocated = int(dataset.get("BitsAllocated", 0) or 0)
    if bits_allocated not in (8, 16, 32):
        raise InputError(path, f"unsupported BitsAllocated {bits_allocated} (8, 16 and 32 are read)")
    transfer_syntax = _transfer_syntax(dataset)
    if transfer_syntax.is_compressed:
        decoder = pydicom.pixels.get_decoder(transfer_syntax)
        if decoder is None or not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies) if decoder is not None else "no decoder exists"
            raise InputError(path, f"pixel data is compressed as {transfer_syntax.name} and no installed decoder "
                                   f"reads it (install one of: {missing})")
    try:
        stored = dataset.pixel_array
        if photometric == "PALETTE COLOR":
            stored = pydicom.pixels.apply_color_lut(stored, dataset)
    except _DECODE_ERRORS as error:
        raise InputError(path, f"truncated or corrupt pixel data ({_reason(error)})") from None
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if photometric in _MONOCHROME:
        values = stored.astype(np.float64)
        if photometric == "MONOCHROME1":
            values = _inverted_stored_range(dataset) - values
        values = _modality_values(dataset, values, frames)
    else:
        values = _luma(stored)
    pixels = values.astype(np.float32)
    _check_finite(path, pixels)
    return pixels


def _transfer_syntax(dataset: pydicom.Dataset) -> pydicom.uid.UID:
    """The file's transfer syntax; files without file meta (no preamble) get the encoding they were parsed with,
    recorded so that pydicom can decode their native pixel data."""
    file_meta = getattr(dataset, "file_meta", None)
    if file_meta is not None and file_meta.get("TransferSyntaxUID"):
        return file_meta.TransferSyntaxUID
    implicit, little_endian = dataset.original_encoding
    if implicit:
        syntax = pydicom.uid.ImplicitVRLittleEndian
    else:
        syntax = pydicom.uid.ExplicitVRLittleEndian if little_endian else pydicom.uid.ExplicitVRBigEndian
    dataset.file_meta = file_meta if file_meta is not None else pydicom.dataset.FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = syntax
    return syntax


def _inverted_stored_range(dataset: pydicom.Dataset) -> float:
    """lowest + highest stored value that BitsStored allows; x -> this - x mirrors the stored range."""
    if int(dataset.get("PixelRepresentation", 0)) == 1:
        return -1.0  # -2**(b-1) + (2**(b-1) - 1)
    return float(2 ** int(dataset.get("BitsStored", dataset.BitsAllocated)) - 1)


def _modality_values(dataset: pydicom.Dataset, stored: np.ndarray, frames: int) -> np.ndarray:
    if dataset.get("ModalityLUTSequence"):
        return pydicom.pixels.apply_modality_lut(stored.astype(np.int64), dataset).astype(np.float64)
    slopes, intercepts = _rescale_per_frame(dataset, frames)
    if frames > 1:
        return stored * slopes[:, None, None] + intercepts[:, None, None]
    return stored * slopes[0] + intercepts[0]


def _rescale_per_frame(dataset: pydicom.Dataset, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Rescale Slope/Intercept of every frame: per-frame functional groups override shared ones, which override
    the top-level tags (enhanced MR objects keep them only in the functional groups)."""
    default = _rescale_of(dataset, (1.0, 0.0))
    shared_groups = dataset.get("SharedFunctionalGroupsSequence")
    if shared_groups:
        default = _rescale_of(_transformation(shared_groups[0]), default)
    per_frame_groups = dataset.get("PerFrameFunctionalGroupsSequence") or []
    pairs = [default] * frames
    if len(per_frame_groups) == frames:
        pairs = [_rescale_of(_transformation(group), default) for group in per_frame_groups]
    slopes, intercepts = zip(*pairs)
    return np.asarray(slopes, dtype=np.float64), np.asarray(intercepts, dtype=np.float64)


def _transformation(group: pydicom.Dataset) -> pydicom.Dataset | None:
    sequence = group.get("PixelValueTransformationSequence")
    return sequence[0] if sequence else None


def _rescale_of(item: pydicom.Dataset | None, default: tuple[float, float]) -> tuple[float, float]:
    if item is None:
        return default
    slope = item.get("RescaleSlope")
    intercept = item.get("RescaleIntercept")
    return (default[0] if slope is None else float(slope), default[1] if intercept is None else float(intercept))


def _check_sides(path: str | os.PathLike, sides: tuple[int, int], limits: _Limits) -> None:
    if min(sides) < MIN_SIDE:
        raise InputError(path, f"{_shape_text(sides)} is too small for a scan (at least {MIN_SIDE} pixels a side)")
    if max(sides) > limits.side:
        raise InputError(path, f"{_shape_text(sides)} slice exceeds the limit of {limits.side} pixels a side "
                               "(max_side; refused before decoding)")


def _check_slices(path: str | os.PathLike, count: int, limits: _Limits, what: str) -> None:
    if count > limits.slices:
        raise InputError(path, f"{what} of {count} slices exceeds the limit of {limits.slices} (max_slices; "
                               "refused before decoding)")


def _check_pixel_count(path: str | os.PathLike, count: int, limits: _Limits, what: str) -> None:
    if count > limits.pixels:
        raise InputError(path, f"{what} of {count} pixels exceeds the limit of {limits.pixels} (refused before "
                               "decoding: a decompression bomb or a wrong header)")


def _check_finite(path: str | os.PathLike, pixels: np.ndarray) -> None:
    if not np.isfinite(pixels).any():
        raise InputError(path, "no finite pixel values (all NaN or infinite)")


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def _reason(error: BaseException) -> str:
    """First line of an exception's message, so an InputError stays one line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
