"""A `convtri lenet` run's settings: the recipe of each (dataset, variant), the checks of the
command line (all made before anything is written), and its data, with their failures as
one-line errors that name the option to change."""
import os
from datetime import datetime
from pathlib import Path

from convtri.lenet import checkpoint, data
from convtri.lenet.command import CommandError, UsageError

# Hyper-parameters per (dataset, variant), each chosen to learn within minutes on 2 CPU cores
# through Triton's interpreter: the sigmoid LeNet ("d2l") sits at chance for hundreds of plain
# SGD steps (the chapter's lr 0.9, batch 256 needs its 10 epochs of 60,000 examples), so it
# trains with Adam on small batches; the ReLU LeNet ("modern") with SGD and momentum.
# tests/test_cli.py trains every pair on a small budget and checks it beats chance clearly.
RECIPES = {
    ("fashion-mnist", "d2l"): dict(optimizer="adam", lr=3e-3, momentum=None, batch_size=8, epochs=3),
    ("fashion-mnist", "modern"): dict(optimizer="sgd", lr=0.02, momentum=0.9, batch_size=32, epochs=3),
    ("digits", "d2l"): dict(optimizer="adam", lr=3e-3, momentum=None, batch_size=8, epochs=3),
    ("digits", "modern"): dict(optimizer="sgd", lr=0.02, momentum=0.9, batch_size=32, epochs=3),
}
DEFAULT_VARIANT = {"fashion-mnist": "d2l", "digits": "modern"}  # the chapter's network; ReLU for digits
OPTIMIZERS = ("sgd", "adam")
# On CPU, --limit defaults to this many examples per split: all of digits (1,438 train), 1/30 of
# Fashion-MNIST, so that a plain `convtri lenet` takes minutes there too. --limit 0 takes all.
CPU_LIMIT = 2000
# What --resume may change; the rest of a run's settings come from its checkpoint.
RESUME_OPTIONS = {"resume", "epochs", "device", "data", "no_download", "debug", "cuda_graph"}
EVAL_OPTIONS = {"eval_only", "device", "data", "no_download", "dataset", "variant", "limit", "debug"}


def check_options(args, allowed, flag):
    """Options given beside --resume or --eval-only that they would ignore."""
    extra = sorted(name for name in args.given if name not in allowed)
    if extra:
        names = ", ".join("--" + name.replace("_", "-") for name in extra)
        raise UsageError(f"{names} cannot be combined with {flag}" + (
            " (a resumed run keeps its settings; only --epochs, --device and --data may change)"
            if flag == "--resume" else ""))


def check_out(args):
    """The folder a new run will write to, checked but not created (that waits for the first epoch)."""
    if args.out is None:
        return Path("runs") / datetime.now().strftime("lenet-%Y%m%d-%H%M%S-%f")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder (created when the first epoch ends)")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"--out {out} is not empty; give a new folder, go on with that run with "
                         f"--resume {out}, or replace its outputs with --overwrite")
    parent = next(p for p in out.absolute().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"--out {out}: cannot create a folder in {parent}")
    return out


def read_saved(path, flag):
    """A lenet.pt or checkpoint.pt named on the command line, or a UsageError naming ``flag``."""
    try:
        return checkpoint.read(path)
    except (FileNotFoundError, IsADirectoryError):
        raise UsageError(f"{flag} {path}: no such file") from None
    except ValueError as err:
        raise UsageError(f"{flag} {err}") from None


def resume_settings(args):
    """(settings, checkpoint content) of the run in --resume DIR, with the --epochs and --data given."""
    if not (Path(args.resume) / "checkpoint.pt").is_file():
        raise UsageError(f"--resume {args.resume}: no checkpoint.pt there (a run writes one when its first "
                         "epoch ends)")
    saved = read_saved(Path(args.resume) / "checkpoint.pt", "--resume")
    if saved["format"] != checkpoint.CHECKPOINT_FORMAT:
        raise UsageError(f"--resume {args.resume}: its checkpoint.pt is a finished network, not a checkpoint")
    settings = dict(saved["arguments"])
    settings["epochs"] = args.epochs or settings["epochs"]
    settings["data"] = args.data or settings["data"]
    if saved["epoch"] >= settings["epochs"]:
        raise UsageError(f"--resume {args.resume}: that run has done all its {settings['epochs']} epochs; "
                         f"give --epochs N, more than {saved['epoch']}, to train it further")
    return settings, saved


def resolve(args, dataset, device):
    """A new run's settings: the command line's values, the recipe of (dataset, variant) for the
    rest, and on CPU the CPU_LIMIT when --limit is not given."""
    variant = args.variant or DEFAULT_VARIANT[dataset]
    settings = dict(RECIPES[(dataset, variant)], dataset=dataset, variant=variant, seed=args.seed,
                    data=args.data, compare_torch=args.compare_torch, fuse=args.fuse,
                    limit=CPU_LIMIT if args.limit is None and device == "cpu" else args.limit or 0)
    for key in ("optimizer", "lr", "momentum", "batch_size", "epochs"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if settings["optimizer"] == "adam" and settings["momentum"] is not None:
        why = "--optimizer adam" if args.optimizer else f"the {dataset}/{variant} recipe"
        raise UsageError(f"--momentum is SGD's, and this run trains with Adam ({why}): leave --momentum out, "
                         "or give --optimizer sgd")
    if settings["optimizer"] == "sgd" and settings["momentum"] is None:
        settings["momentum"] = 0.0
    return settings


def load_data(dataset, root, download, verbose):
    """(train, test, name) of a --dataset choice, its failures as one-line errors naming the flags."""
    shown = root or data.DEFAULT_ROOT
    try:
        return data.load_dataset(dataset, root, download=download, verbose=verbose)
    except data.MissingFilesError as err:
        missing = "all four" if len(err.missing) == len(data.FASHION_MNIST_FILES) else ", ".join(err.missing)
        raise CommandError(f"Fashion-MNIST is not in --data {shown} (missing: {missing}) "
                           "and --no-download forbids fetching it; drop --no-download, point --data at a folder "
                           "that holds the files (flat or torchvision's FashionMNIST/raw/), "
                           "or use --dataset digits") from None
    except data.DownloadError as err:
        raise CommandError(f"could not download Fashion-MNIST into --data {shown} ({err.reason}); put its four "
                           f".gz files from {data.FASHION_MNIST_URL} there, or use --dataset digits, "
                           "which needs no network") from None
    except data.CorruptFileError as err:
        raise CommandError(f"--data {shown}: {err}; delete or replace that file (without --no-download "
                           "a deleted file is downloaded again)") from None
    except ImportError as err:
        raise CommandError(f"--dataset digits: {err}") from None


def describe(settings, run, train, test):
    """The run in one line: data, network, recipe, device."""
    recipe = f"{settings['optimizer']} lr {settings['lr']:g}" + (
        f" momentum {settings['momentum']:g}" if settings["optimizer"] == "sgd" else "")
    device = f"{run.device}" + (f" x {run.world_size} processes" if run.world_size > 1 else "") + (
        " (Triton interpreter)" if run.device.type == "cpu" else "")
    return (f"{settings['dataset']} {len(train)} train / {len(test)} test, {settings['variant']} LeNet, {recipe}"
            + (", activations fused into the convolutions" if settings.get("fuse") else "")
            + f", batch {settings['batch_size']}" + (" per process" if run.world_size > 1 else "")
            + f", {settings['epochs']} epochs, {device}")
