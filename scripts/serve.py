r"""Serves the clinician web page: upload an MRI slice, series or volume, see class, probability and Grad-CAM.

    python scripts/serve.py --workdir=DIR [--host=127.0.0.1] [--port=8000] [--eval_dir=DIR] [--token=TOKEN]
        [--batch_size=16] [--batching=on]

The model is loaded and compiled before the port opens. The decision threshold is the one the workdir's
evaluation chose on validation (reports in --eval_dir, default WORKDIR/eval; `make serve` points it at
results/demo/eval). Binding anything but loopback needs a token (--token, or ASEMBLE_WEB_TOKEN), which every API
call then carries; open the page as http://HOST:PORT/#token=TOKEN. Needs the `web` extra:
pip install -e ".[web]". The app, its limits and headers: asemble_jax/web/app.py.
"""
import argparse
import sys

from asemble_jax.errors import UserError, run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a trained workdir")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--eval_dir", help="where the workdir's evaluation reports are (default WORKDIR/eval)")
    parser.add_argument("--token", help="access token for every API call (default $ASEMBLE_WEB_TOKEN)")
    parser.add_argument("--batch_size", type=int, default=16, help="slices per compiled batch")
    parser.add_argument("--batching", choices=("on", "off"), default="on",
                        help="batch slices of concurrent requests together (off: one request per batch)")
    args = parser.parse_args(argv)
    try:
        from asemble_jax.web.app import serve
    except ImportError as error:
        raise UserError(f"the web page needs the web extra (pip install -e \".[web]\"): {error}") from None
    serve(args.workdir, host=args.host, port=args.port, token=args.token, eval_dir=args.eval_dir,
          batch_size=args.batch_size, batching=args.batching == "on")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
