"""``python -m audioproc`` is the ``audioproc`` command."""

from audioproc.cli import main

if __name__ == "__main__":
    main()
