"""An upload, from the request body to model slices, within the service limits.

The body is multipart/form-data, parsed as it streams in (python-multipart's MultipartParser, fed from the ASGI
receive stream) and written part by part into a folder of this request alone, which the caller removes when the
request ends. Every part is a file; its place in the upload is its only name ("file 3"): the file names the
browser sends, which clinical exports fill with patient names, are never read. The limits on bytes and on files
are checked as the bytes arrive, so an upload over them is refused before the rest of it is read.

Each file's type comes from its first bytes, never from its name: PNG, JPEG, TIFF, DICOM (Part 10, with its
preamble) or NIfTI (.nii, or gzip-compressed). Several DICOM files in one upload are one series, read together
and sorted by InstanceNumber. Reading and preprocessing are asemble_jax.user_inputs.iter_slices, the same code as
the command-line tools and the training preprocessing, under the readers' limits set to the service's."""
from __future__ import annotations

import dataclasses
import gzip
import os
import pathlib
import struct
import time
from collections.abc import AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from asemble_jax.errors import InputError
from asemble_jax.user_inputs import Slice, iter_slices

MIB = 2 ** 20
KINDS = {"png": "PNG", "jpeg": "JPEG", "tiff": "TIFF", "dicom": "DICOM", "nifti": "NIfTI", "nifti_gz": "NIfTI"}
# What iter_slices needs to see in a name to read a file as NIfTI (it picks the reader by suffix).
_SUFFIXES = {"nifti": ".nii", "nifti_gz": ".nii.gz", "dicom": ".dcm"}
_NIFTI_HEADERS = {348: (344, b"n+1\0"), 540: (4, b"n+2\0")}  # sizeof_hdr -> (offset, magic) of single-file NIfTI
_OVER_LIMIT = ("exceeds the limit", "inflates to more than")  # the readers' words for a file over a limit


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may hold. MR slices are at most ~1024 pixels a side and an SIJ series has tens of slices;
    the readers' own limits (8192 x 8192 values) are a bomb guard, far too generous for a shared service: a
    67-megapixel PNG takes minutes and gigabytes to preprocess."""

    request_bytes: int = 64 * MIB
    files: int = 64
    side: int = 1024  # pixels a side of any slice, so at most 1024 x 1024 pixels an image
    slices: int = 64  # slices of a volume, and in the whole upload
    file_pixels: int = 64 * 512 * 512  # values in one file (frames included): 64 slices of 512 x 512
    seconds: float = 60.0  # from the first byte of the request to its answer

    def public(self) -> dict[str, float]:
        return dataclasses.asdict(self)


class UploadError(Exception):
    """A refused request: its HTTP status, the one line the page shows and, where several files failed, the line
    of each."""

    def __init__(self, status: int, message: str, errors: list[str] | None = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors or []


@dataclasses.dataclass(frozen=True)
class Source:
    """One thing the upload holds: a file, or the DICOM series its DICOM files make together."""

    name: str  # "file 2", or "DICOM series of files 2-6": the page maps numbers back to the names it sent
    kind: str
    path: pathlib.Path
    files: tuple[int, ...]  # 1-based places of its files in the upload


@dataclasses.dataclass(frozen=True)
class ReadSlice:
    source: Source
    number: int | None  # the slice of a volume or series (0-based), None for a 2-D image
    slice: Slice


async def receive_files(headers, body: AsyncIterator[bytes], folder: pathlib.Path, limits: Limits
                        ) -> list[pathlib.Path]:
    """Writes each part of the multipart body into `folder` as 1, 2, ...; UploadError (413) once the body passes
    limits.request_bytes or holds more than limits.files parts, (415) if it is not multipart/form-data, (422) if it
    is malformed or holds no file."""
    content_type, options = parse_options_header(headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise UploadError(415, "the upload must be multipart/form-data (files sent as a form)")
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.request_bytes:
        raise UploadError(413, _too_many_bytes(limits))
    parts = _PartWriter(folder, limits.files)
    try:
        parser = MultipartParser(options[b"boundary"], callbacks=parts.callbacks())
        received = 0
        async for chunk in body:
            received += len(chunk)
            if received > limits.request_bytes:
                raise UploadError(413, _too_many_bytes(limits))
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise UploadError(422, "the upload is not well-formed multipart/form-data") from None
    finally:
        parts.close()
    if not parts.ended:
        raise UploadError(422, "the upload ended before its last part was complete")
    if not parts.paths:
        raise UploadError(422, "the upload holds no file")
    return parts.paths


def _too_many_bytes(limits: Limits) -> str:
    return f"the upload is larger than the limit of {limits.request_bytes // MIB} MiB per request"


class _PartWriter:
    """python-multipart callbacks that stream each part to its own file; part headers (and so file names) are
    never looked at."""

    def __init__(self, folder: pathlib.Path, max_files: int):
        self.folder, self.max_files = folder, max_files
        self.paths: list[pathlib.Path] = []
        self.ended = False
        self._file = None

    def callbacks(self):
        return {"on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end,
                "on_end": self._finish}

    def _begin(self):
        if len(self.paths) == self.max_files:
            raise UploadError(413, f"the upload holds more than the limit of {self.max_files} files per request")
        self.paths.append(self.folder / str(len(self.paths) + 1))
        self._file = open(self.paths[-1], "xb")

    def _data(self, data: bytes, start: int, end: int):
        self._file.write(data[start:end])

    def _end(self):
        self.close()

    def _finish(self):
        self.ended = True

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def content_kind(path: pathlib.Path) -> str | None:
    """One of KINDS from the file's first bytes, or None."""
    with open(path, "rb") as file:
        head = file.read(540)
        if head[:2] == b"\x1f\x8b":
            file.seek(0)
            try:
                with gzip.GzipFile(fileobj=file) as stream:
                    return "nifti_gz" if _is_nifti(stream.read(540)) else None  # never more is inflated
            except (OSError, EOFError):
                return None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "tiff"
    if head[128:132] == b"DICM":
        return "dicom"
    return "nifti" if _is_nifti(head) else None


def _is_nifti(head: bytes) -> bool:
    if len(head) < 4:
        return False
    for size in {struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]}:
        offset, magic = _NIFTI_HEADERS.get(size, (None, None))
        if magic is not None and head[offset:offset + 4] == magic:
            return True
    return False


def sources(paths: list[pathlib.Path], folder: pathlib.Path) -> tuple[list[Source], list[str]]:
    """What the files are (a file each; all DICOM files together as one series) and a line for each file of no
    supported type. Files are renamed so that iter_slices picks the reader their content calls for."""
    found, errors, dicoms = [], [], []
    for number, path in enumerate(paths, 1):
        if path.stat().st_size == 0:
            errors.append(f"file {number}: is empty (0 bytes)")
            continue
        kind = content_kind(path)
        if kind is None:
            errors.append(f"file {number}: is not a PNG, JPEG, TIFF, DICOM or NIfTI file (judged from its content)")
        elif kind == "dicom":
            dicoms.append(number)
        else:
            renamed = path.with_name(path.name + _SUFFIXES.get(kind, ""))
            os.replace(path, renamed)
            found.append(Source(f"file {number}", KINDS[kind], renamed, (number,)))
    if len(dicoms) == 1:
        path = paths[dicoms[0] - 1]
        found.append(Source(f"file {dicoms[0]}", "DICOM", path, (dicoms[0],)))
    elif dicoms:
        series = folder / "series"
        series.mkdir()
        for number in dicoms:
            os.replace(paths[number - 1], series / f"{number}.dcm")
        found.append(Source(f"DICOM series of files {_numbers(dicoms)}", "DICOM series", series, tuple(dicoms)))
    found.sort(key=lambda source: source.files[0])
    return found, errors


def _numbers(numbers: list[int]) -> str:
    return f"{numbers[0]}-{numbers[-1]}" if numbers == list(range(numbers[0], numbers[-1] + 1)) else \
        ", ".join(map(str, numbers))


def read_slices(found: list[Source], *, image_size: int, limits: Limits, deadline: float
                ) -> tuple[list[ReadSlice], list[str]]:
    """The model slices of every source, in order, and a line for each source or slice that cannot be used.
    UploadError: 413 for anything over a limit (nothing of the upload is classified then), 503 past the deadline
    (time.monotonic())."""
    read, errors, refused = [], [], 0
    names = {str(source.path): source.name for source in found}
    for source in found:
        slice_errors: list[InputError] = []
        try:
            for item in iter_slices(source.path, source.path, source.path.parent, image_size=image_size,
                                    slice_index=None, on_slice_error=slice_errors.append, max_side=limits.side,
                                    max_slices=limits.slices, max_pixels=limits.file_pixels):
                read.append(ReadSlice(source, _slice_number(item.label, str(source.path)), item))
                if time.monotonic() > deadline:
                    raise UploadError(503, f"the request took longer than the limit of {limits.seconds:g} s")
        except InputError as error:
            line = describe(error, names)
            if any(words in error.problem for words in _OVER_LIMIT):
                raise UploadError(413, line) from None
            errors.append(line)
        errors.extend(describe(error, names) for error in slice_errors)
        refused += len(slice_errors)
        if len(read) + refused > limits.slices:
            raise UploadError(413, f"the upload holds more than the limit of {limits.slices} slices per request")
    return read, errors


def _slice_number(label: str, path: str) -> int | None:
    return None if label == path else int(label[len(path) + len(" slice "):])


def describe(error: InputError, names: dict[str, str]) -> str:
    """The error's line with the request's own file names in place of its temporary paths."""
    for path in sorted(names, key=len, reverse=True):
        if error.path == path or error.path.startswith(path + " slice "):
            return f"{names[path]}{error.path[len(path):]}: {error.problem}"
        if os.path.dirname(error.path) == path:  # a file of a series
            number = os.path.basename(error.path).removesuffix(".dcm")
            return f"file {number} (of the DICOM series): {error.problem}"
    return f"an uploaded file: {error.problem}"
