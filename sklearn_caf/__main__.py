"""``python -m sklearn_caf``: the same as the ``sklearn-caf`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
