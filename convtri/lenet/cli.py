"""The ``convtri`` command: ``convtri demo`` and ``convtri lenet``.

A user error is one line, ``convtri <command>: error: <message>``, naming the option to change:
exit status 2 for arguments that cannot work, 1 for a failure while running, and a traceback
only with --debug. Ctrl-C prints ``interrupted``, keeps what is saved, and exits with 130.
"""
import argparse
import sys
import time

import torch

import convtri
from convtri.lenet.command import CommandError, UsageError, pick_device, versions


def demo(args) -> int:
    """The chapter's edge detection and kernel learning, checked against the chapter's answers,
    then LeNet's two convolutions forward and backward. (Parity with torch is the tests' job.)"""
    device = pick_device(args.device)
    print(f"convtri demo on {device} ({'compiled Triton kernels' if device == 'cuda' else 'Triton interpreter'})")
    torch.manual_seed(0)
    X = torch.ones(6, 8, device=device)
    X[:, 2:6] = 0
    K = torch.tensor([[1.0, -1.0]], device=device)
    Y = convtri.corr2d(X, K)
    print("edge detection, corr2d(X, [[1, -1]]): 1 marks white->black, -1 black->white\n", Y.cpu())
    edges = torch.zeros(6, 7)
    edges[:, 1], edges[:, 5] = 1, -1  # the chapter's answer
    edges_ok = torch.equal(Y.cpu(), edges)

    conv = convtri.nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False).to(device)
    for step in range(20):
        loss = ((conv(X[None, None]) - Y) ** 2).sum()
        conv.zero_grad()
        loss.backward()
        conv.weight.data -= 3e-2 * conv.weight.grad
        if (step + 1) % 5 == 0:
            print(f"learning the kernel: step {step + 1}, loss {loss.item():.4f}")
    learned = conv.weight.detach().reshape(-1).cpu()
    print("learned kernel", learned.tolist(), "(target [1, -1])")
    kernel_ok = (learned - K.reshape(-1).cpu()).abs().max().item() < 0.05

    for x_shape, w_shape, kwargs, name in [((4, 1, 28, 28), (6, 1, 5, 5), dict(padding=2), "LeNet C1"),
                                            ((4, 6, 14, 14), (16, 6, 5, 5), {}, "LeNet C3")]:
        x = torch.randn(x_shape, device=device, requires_grad=True)
        w = torch.randn(w_shape, device=device, requires_grad=True)
        start = time.perf_counter()
        y = convtri.conv2d(x, w, **kwargs)
        torch.autograd.grad(y, (x, w), torch.ones_like(y))
        print(f"{name}: conv2d {list(x_shape)} * {list(w_shape)} {kwargs} -> {list(y.shape)}, "
              f"forward+backward {time.perf_counter() - start:.2f}s")
    if not (edges_ok and kernel_ok):
        raise CommandError(f"the chapter's answers were not reproduced (edges {edges_ok}, "
                           f"learned kernel {kernel_ok})")
    print("chapter's answers: OK")
    return 0


def lenet(args) -> int:
    from convtri.lenet.training import lenet as train_lenet
    train_lenet(args)
    return 0


# ----------------------------------------------------------------------------- arguments

class Parser(argparse.ArgumentParser):
    """argparse, with its errors as our one-line UsageError."""

    def error(self, message):
        err = UsageError(f"{message} (see {self.prog} --help)")
        err.prog = self.prog
        raise err


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default at the end of its help, unless the help already says it."""

    def _get_help_string(self, action):
        if "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def number(kind, low, high=None, low_ok=True):
    """An argparse type: ``kind`` within [low, high) (or (low, high) when not ``low_ok``)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if value < low or (value == low and not low_ok) or (high is not None and value >= high):
            bounds = (f"{'at least' if low_ok else 'more than'} {low}"
                      + (f" and below {high}" if high is not None else ""))
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value
    return parse


def add_lenet_parser(commands, common):
    from convtri.lenet.data import DATASETS, DEFAULT_ROOT
    from convtri.lenet.models import VARIANTS
    from convtri.lenet.settings import CPU_LIMIT, DEFAULT_VARIANT, OPTIMIZERS, RECIPES
    recipes = "\n".join(f"  {dataset:14} {variant:7} " + ", ".join(
        f"{key.replace('_', ' ')} {value:g}" if isinstance(value, float) else f"{key.replace('_', ' ')} {value}"
        for key, value in recipe.items() if value is not None) for (dataset, variant), recipe in RECIPES.items())
    lenet = commands.add_parser(
        "lenet", parents=[common], formatter_class=HelpFormatter, help="train LeNet on our kernels",
        description="Train the chapter's LeNet on convtri's kernels and write metrics.csv and checkpoint.pt "
                    "after every epoch, then curves.png, filters.png and lenet.pt.\n\nRecipes, the defaults per "
                    f"(dataset, variant):\n{recipes}\n\nOn CPU (Triton's interpreter) --limit defaults to "
                    f"{CPU_LIMIT} examples per split, so that a run takes minutes. Under torchrun, "
                    "--batch-size is per process.")
    lenet.add_argument("--dataset", choices=DATASETS, default="auto",
                       help="auto: Fashion-MNIST when it is in --data or can be downloaded, else digits")
    lenet.add_argument("--data", metavar="DIR", default=None,
                       help="folder with Fashion-MNIST's IDX files (flat, or torchvision's DIR/FashionMNIST/raw); "
                            f"default: {DEFAULT_ROOT}")
    lenet.add_argument("--no-download", action="store_true", help="never download Fashion-MNIST")
    lenet.add_argument("--variant", choices=VARIANTS, default=None,
                       help="d2l: sigmoid and average pooling, as the chapter; modern: ReLU and max pooling "
                            "(default: " + ", ".join(f"{v} for {d}" for d, v in DEFAULT_VARIANT.items()) + ")")
    lenet.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="default: the recipe's")
    lenet.add_argument("--epochs", type=number(int, 1), default=None, help="default: the recipe's")
    lenet.add_argument("--batch-size", type=number(int, 1), default=None,
                       help="examples per step, per process under torchrun (default: the recipe's)")
    lenet.add_argument("--lr", type=number(float, 0, low_ok=False), default=None,
                       help="learning rate (default: the recipe's)")
    lenet.add_argument("--momentum", type=number(float, 0, 1), default=None,
                       help="SGD's momentum, in [0, 1) (default: the recipe's)")
    lenet.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    lenet.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                       help="cpu runs our kernels through Triton's interpreter")
    lenet.add_argument("--limit", metavar="N", type=number(int, 0), default=None,
                       help=f"the first N examples of each split, 0 for all (default: {CPU_LIMIT} on CPU, "
                            "all on a GPU)")
    lenet.add_argument("--out", metavar="DIR", default=None,
                       help="output folder, new or empty (default: a new folder under runs/)")
    lenet.add_argument("--overwrite", action="store_true",
                       help="let --out name a folder that holds an earlier run, replacing its outputs")
    lenet.add_argument("--resume", metavar="RUN_DIR", default=None,
                       help="go on with the run saved in RUN_DIR (its checkpoint.pt), to its --epochs or more "
                            "(default: start a new run)")
    lenet.add_argument("--eval-only", metavar="CHECKPOINT", default=None,
                       help="evaluate a lenet.pt or checkpoint.pt on its dataset's test split, train nothing "
                            "(default: train)")
    lenet.add_argument("--compare-torch", action="store_true",
                       help="also train a torch.nn twin from the same weights on the same batches, and compare "
                            "its results and speed with ours")
    lenet.add_argument("--no-fuse", dest="fuse", action="store_false",
                       help="run each convolution's activation as a layer of its own (default: fused into the "
                            "convolution's kernels, forward and backward: convert(model, fuse=True))")
    lenet.add_argument("--cuda-graph", action="store_true",
                       help="CUDA only: after 3 eager steps, capture the whole training step (forward, backward, "
                            "update) in a CUDA graph and replay it for each batch, with no host work per kernel; "
                            "if the capture fails the run says why and goes on eagerly (default: eager steps)")
    return lenet


def build_parser():
    """The parser, and the parser of each command by name."""
    parser = Parser(prog="convtri", description=convtri.__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version",
                        version="convtri {convtri} (torch {torch}, triton {triton})".format(**versions()))
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    demo_parser = commands.add_parser("demo", parents=[common], formatter_class=HelpFormatter,
                                      help="edge detection and kernel learning, checked against the chapter")
    demo_parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                             help="cpu runs our kernels through Triton's interpreter")
    return parser, {"demo": demo_parser, "lenet": add_lenet_parser(commands, common)}


COMMANDS = {"demo": demo, "lenet": lenet}


def main(argv=None) -> int:
    parser, command_parsers = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        defaults = command_parsers[args.command]
        args.given = {name for name, value in vars(args).items()  # what the user typed, for --resume's checks
                      if name not in ("command", "given") and value != defaults.get_default(name)}
        return COMMANDS[args.command](args)
    except CommandError as err:
        if args is not None and args.debug:
            raise
        prog = getattr(err, "prog", None) or f"convtri {args.command}"
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt:
        if args is not None and args.debug:
            raise
        print(f"convtri {args.command}: interrupted" if args else "convtri: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # not the user's doing: still one line, the traceback behind --debug
        if args is None or args.debug:
            raise
        print(f"convtri {args.command}: error: {type(err).__name__}: {one_line(err)} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def one_line(err):
    return " ".join(str(err).split())


if __name__ == "__main__":
    raise SystemExit(main())
