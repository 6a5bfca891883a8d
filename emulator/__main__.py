"""``python -m emulator``: run the Azure ML Studio (classic) emulator (see emulator/README.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emulator.catalog import DEFAULT_SEED
from emulator.server import Options, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback unless --allow-non-loopback)")
    parser.add_argument("--port", type=int, default=8765, help="HTTP port: BES, RRS, management, ARM, admin")
    parser.add_argument("--tls-port", type=int, default=8766, help="HTTPS port (token authority; same routes)")
    parser.add_argument("--data-dir", type=Path, help="state, models and TLS certificate (default: a temp dir)")
    parser.add_argument("--seed", type=Path, default=DEFAULT_SEED, help="seed YAML (default: emulator/seed.yaml)")
    parser.add_argument("--in-memory", action="store_true", help="do not persist state")
    parser.add_argument("--public-url", help="base URL clients use (default http://HOST:PORT)")
    parser.add_argument("--allow-non-loopback", action="store_true", help="allow --host other than loopback")
    parser.add_argument(
        "--tls-hostname",
        help="host name clients use for the TLS listener: added to its certificate and used in the authority "
        "URL (default: the listen address, 127.0.0.1 for 0.0.0.0)",
    )
    args = parser.parse_args(argv)
    options = Options(
        host=args.host,
        port=args.port,
        tls_port=args.tls_port,
        data_dir=args.data_dir,
        seed=args.seed,
        in_memory=args.in_memory,
        public_url=args.public_url,
        allow_non_loopback=args.allow_non_loopback,
        tls_hostname=args.tls_hostname,
    )
    return run(options)


if __name__ == "__main__":
    sys.exit(main())
