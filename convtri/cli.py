"""The ``convtri`` command."""
import argparse
import time

import torch

import convtri


def demo(device: str) -> int:
    """The chapter's edge detection and kernel learning, checked against the chapter's answers,
    then LeNet's two convolutions forward and backward. (Parity with torch is the tests' job.)"""
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
    ok = edges_ok and kernel_ok
    print("chapter's answers:", "OK" if ok else f"FAILED (edges {edges_ok}, learned kernel {kernel_ok})")
    return 0 if ok else 1


def add_lenet_parser(commands):
    from convtri.data import DATASETS
    from convtri.models import VARIANTS
    from convtri.training import RECIPES
    recipes = "; ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in recipe.items())
                        for name, recipe in RECIPES.items())
    lenet = commands.add_parser(
        "lenet", help="train LeNet on our kernels",
        description=f"Train the chapter's LeNet on convtri's kernels. Defaults per dataset ({recipes}); "
                    "'auto' uses Fashion-MNIST when it is in --data or can be downloaded, else digits.")
    lenet.add_argument("--data", default=None, help="directory with Fashion-MNIST's IDX files (flat, or "
                       "torchvision's <DIR>/FashionMNIST/raw); default ~/.cache/convtri")
    lenet.add_argument("--dataset", choices=DATASETS, default="auto")
    lenet.add_argument("--no-download", action="store_true", help="never download Fashion-MNIST")
    lenet.add_argument("--variant", choices=VARIANTS, default=None)
    lenet.add_argument("--epochs", type=int, default=None)
    lenet.add_argument("--batch-size", type=int, default=None)
    lenet.add_argument("--lr", type=float, default=None)
    lenet.add_argument("--momentum", type=float, default=None)
    lenet.add_argument("--seed", type=int, default=0)
    lenet.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    lenet.add_argument("--limit", type=int, default=None, help="cap the examples per split")
    lenet.add_argument("--out", default=None, help="output directory (default: a new folder under runs/)")
    lenet.add_argument("--compare-torch", action="store_true",
                       help="also train a torch.nn twin from the same weights on the same batches")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="convtri", description=convtri.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="edge detection and a parity check against torch")
    demo_parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    add_lenet_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "lenet":
        from convtri.training import lenet
        for name in ("epochs", "batch_size", "limit"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be at least 1")
        lenet(args)
        return 0
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return demo(device)


if __name__ == "__main__":
    raise SystemExit(main())
