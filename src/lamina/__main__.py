"""``python -m lamina``: the ``lamina`` command."""

from lamina.cli import main

if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    main(prog_name="lamina")
