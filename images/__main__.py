"""``python -m images build [NAME ...] [--force]``: build the project's images (see images/)."""

from __future__ import annotations

import argparse
import sys

from images.build import build_all, load_specs
from images.engine import DockerEngine, EngineError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build the images (all, or those named)")
    build.add_argument(
        "names", nargs="*", metavar="NAME", help=f"of {[s.name for s in load_specs()]}"
    )
    build.add_argument(
        "--force", action="store_true", help="build even when the sources are unchanged"
    )
    args = parser.parse_args(argv)
    try:
        engine = DockerEngine.ensure()
    except EngineError as error:
        print(f"images: {error}", file=sys.stderr)
        return 1
    try:
        results = build_all(engine, args.names, force=args.force)
    except EngineError as error:
        print(f"images: {error}", file=sys.stderr)
        return 1
    finally:
        engine.stop()  # only a daemon that ensure() started
    for r in results:
        state = "built" if r.built else "up to date"
        print(
            f"{r.ref:<28} {r.image_id[7:19]}  {r.size_bytes / 2**20:8.0f} MiB  {state:<10} {r.seconds:6.1f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
