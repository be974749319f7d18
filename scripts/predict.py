r"""Classifies image files with a trained workdir and writes a Grad-CAM overlay for each.

    python scripts/predict.py --workdir=DIR FILE [FILE ...] [--out=DIR] [--which=best] [--slice=all]
        [--batch_size=16] [--max_side=4096] [--max_slices=1024]

Files: PNG, JPEG, TIFF, DICOM (any file name) and NIfTI (.nii, .nii.gz). They are read and preprocessed exactly
as scripts/gradcam.py reads them (asemble_jax.user_inputs.load_slices: asemble_jax.data.readers, then the training
preprocessing of asemble_jax.data.preprocess, then the evaluation input conversion
asemble_jax.data.pipeline.to_model_input), so the model sees what it saw in evaluation. The model classifies
2-D slices: a volume (NIfTI, multi-frame DICOM, multi-page TIFF) gives one prediction per slice, every slice by
default (NIfTI slice k is vol[:, :, k] shown superior-up, as the builders store it), or only slice K (0-based)
with --slice=K. One line per slice on stdout:

    scan.nii.gz slice 12: inflammation (p=0.912), Grad-CAM: OUT/scan.nii.gz_slice12_gradcam.png

the class is the most probable one, p its probability, and the overlay (written atomically under --out, default
WORKDIR/predictions) shows the Grad-CAM of that class: the fused map of all branches, or the only layer of a
single-branch model (asemble_jax/gradcam.py). Class names are those of the dataset the model was trained on.
A file that cannot be read or is not an image gets one line on stderr naming it and the reason; the other
files are still processed and the exit status is 1. So does a file over the size limits, refused from its header
before any pixel is decoded: slices of at most --max_side pixels a side (default 4096), volumes of at most
--max_slices slices (default 1024), and at most 67108864 values (8192 x 8192) per file. A slice that has no usable
contrast (a blank or constant image, or one that is almost all padding once cropped: one value fills 98% or more
of it) or no finite value is never classified: it gets its own line ('scan.nii.gz slice 7: no usable contrast
...'), the volume's other slices are still classified, and the exit status is 1.
Exit status 2: the workdir, --out or an option is unusable.
Nothing from DICOM headers is printed or written: lines name files by the path given.
The work is asemble_jax/classify.py's (write_predictions).
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
    parser.add_argument("files", nargs="+", type=pathlib.Path, metavar="FILE", help="image files to classify")
    parser.add_argument("--out", type=storage.as_path, help="where overlays go (a folder or gs://...); default "
                        "WORKDIR/predictions")
    parser.add_argument("--which", choices=("best", "latest"), default="best", help="which checkpoint")
    parser.add_argument("--slice", type=slice_argument, default=None, dest="slice_index",
                        help="'all' (default) or the 0-based slice of volumes to classify")
    parser.add_argument("--batch_size", type=int, default=classify.DEFAULT_BATCH_SIZE,
                        help="slices per compiled batch")
    add_limit_arguments(parser)
    args = parser.parse_args(argv)
    classifier = classify.Classifier.from_workdir(args.workdir, which=args.which, batch_size=args.batch_size)
    return classify.write_predictions(classifier, args.files, out=args.out or args.workdir / "predictions",
                                      slice_index=args.slice_index, max_side=args.max_side,
                                      max_slices=args.max_slices)


if __name__ == "__main__":
    sys.exit(run_main(main))
