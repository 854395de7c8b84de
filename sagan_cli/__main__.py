"""``python -m sagan_cli`` and the ``sagan`` console script.

Stop signals are taken over first (``sagan_cli.signals``, standard library only): Ctrl-C
while the command line loads, or at any moment outside a training loop, exits 130 with
one line, never an exception inside a half-finished import.
"""


def main() -> None:
    from sagan_cli.signals import exit_promptly

    exit_promptly()
    from sagan_cli.cli import main as run

    run()


if __name__ == "__main__":
    main()
