r"""Grad-CAM overlays of a trained model on image files.

    python scripts/gradcam.py --workdir=DIR --input=FILE_OR_DIR --out=DIR [--which=best] [--slice=all]
        [--target_class=K] [--batch_size=16] [--max_side=4096] [--max_slices=1024]

Inputs: PNG, JPEG, TIFF, DICOM (any file name; a folder of DICOM slices is read file by file) and NIfTI
(.nii, .nii.gz). A folder is searched recursively, hidden files skipped. Every slice goes through the training
preprocessing (asemble_jax.data.preprocess) and is resized and scaled as evaluation does
(asemble_jax.data.pipeline.to_model_input). Volumes (NIfTI, multi-frame DICOM, multi-page TIFF) give every slice,
or only slice K (0-based, in the reader's order) with --slice=K.

For each slice, under --out, mirroring the input's folders: <name>_input.png (what the model saw), one overlay
per Grad-CAM layer (<name>_wide_resnet.png, _convnext.png, _vit.png for ASembleNet; _last_conv.png for a
baseline) and, with several layers, <name>_fused.png. <name> is the file name (with its extension, so that
a.png and a.jpg stay apart), plus _sliceK for volumes. The maps explain the predicted class, or class K with
--target_class=K; asemble_jax/gradcam.py defines them. Files are written atomically. A file that cannot be used
gets one line on stderr naming it and the reason; the others are still processed, and the exit status is 1
(2 when the workdir, the input path, --out or an option is unusable). Files over the size limits are refused from
their header before any pixel is decoded: slices of at most --max_side pixels a side (default 4096), volumes of at
most --max_slices slices (default 1024), at most 67108864 values (8192 x 8192) per file. A slice with no usable
contrast (blank, constant, or almost all padding once cropped: one value fills 98% or more of it) or no finite
value is never explained: it gets its own line ('<file> slice K: ...'), and the other slices are still explained.
Nothing from DICOM headers is printed or written. The work is asemble_jax/classify.py's (write_explanations).
"""
import argparse
import pathlib
import sys

from asemble_jax import classify, storage
from asemble_jax.errors import run_main
from asemble_jax.user_inputs import add_limit_arguments, slice_argument


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, type=storage.as_path, help="a training workdir (or gs://...)")
    parser.add_argument("--input", required=True, type=pathlib.Path, help="an image file or a folder of them")
    parser.add_argument("--out", required=True, type=storage.as_path, help="where the PNGs go (a folder or gs://...)")
    parser.add_argument("--which", choices=("best", "latest"), default="best", help="which checkpoint")
    parser.add_argument("--slice", type=slice_argument, default=None, dest="slice_index",
                        help="'all' (default) or the 0-based slice of volumes to explain")
    parser.add_argument("--target_class", type=int, default=None,
                        help="explain this class instead of the predicted one")
    parser.add_argument("--batch_size", type=int, default=classify.DEFAULT_BATCH_SIZE,
                        help="slices per compiled batch")
    add_limit_arguments(parser)
    args = parser.parse_args(argv)
    classifier = classify.Classifier.from_workdir(args.workdir, which=args.which, batch_size=args.batch_size)
    return classify.write_explanations(classifier, args.input, out=args.out, slice_index=args.slice_index,
                                       target_class=args.target_class, max_side=args.max_side,
                                       max_slices=args.max_slices)


if __name__ == "__main__":
    sys.exit(run_main(main))
