"""``python -m convtri``, the same as the ``convtri`` command (also under ``torchrun -m convtri``):
the application's door (convtri/lenet/), the one file of the library's folder that imports it."""
from convtri.lenet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
