"""``python -m sagan_cli`` and the ``sagan`` console script.

Importing the command line takes a moment; Ctrl-C during it exits 130 with one line,
not an import traceback.
"""

import sys


def main() -> None:
    try:
        from sagan_cli.cli import main as run
    except KeyboardInterrupt:
        print("Interrupted while starting; nothing was done.", file=sys.stderr)
        raise SystemExit(130) from None
    run()


if __name__ == "__main__":
    main()
