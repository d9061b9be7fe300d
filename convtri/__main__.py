"""``python -m convtri``, the same as the ``convtri`` command (also under ``torchrun -m convtri``)."""
from convtri.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
