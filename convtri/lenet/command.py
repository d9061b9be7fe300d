"""What the ``convtri`` commands share: their one-line errors, the device choice, the versions."""
import importlib.metadata

import torch
import triton


class CommandError(Exception):
    """A failure the user can act on, printed as one line ``convtri <command>: error: <message>``
    (no traceback unless --debug). ``status`` is the exit status: 1 for a failure at run time."""
    status = 1


class UsageError(CommandError):
    """Arguments that cannot work, found before any work starts: exit status 2, as argparse's."""
    status = 2


def pick_device(choice: str) -> str:
    """``cpu`` or ``cuda`` for a --device choice; "auto" takes CUDA when torch sees a GPU."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but torch sees no CUDA GPU here; use --device cpu (our kernels "
                         "through Triton's interpreter) or --device auto")
    return choice


def package_version() -> str:
    try:
        return importlib.metadata.version("convtri")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


def versions() -> dict:
    """What wrote a file or ran a command: convtri's, torch's and triton's versions."""
    return {"convtri": package_version(), "torch": str(torch.__version__), "triton": str(triton.__version__)}
