"""What a `convtri lenet` run saves: ``checkpoint.pt`` after every epoch (all a run needs to go
on) and ``lenet.pt`` at the end (the trained network). Both record the LeNet variant, the run's
settings and the versions that wrote them, so that a network never loads silently into the
other variant: d2l and modern LeNets have the very same parameter names and shapes.

    content = torch.load("lenet.pt")          # {"format", "variant", "arguments", "versions", "epoch", "state_dict"}
    TorchLeNet(content["variant"]).load_state_dict(content["state_dict"])   # plain torch.nn
    net = load_lenet("lenet.pt")              # convtri.nn layers, the variant checked
"""
import os
from pathlib import Path

import torch

import convtri.nn as cnn
from convtri.lenet.command import versions
from convtri.lenet.models import LeNet

LENET_FORMAT = "convtri-lenet"  # lenet.pt
CHECKPOINT_FORMAT = "convtri-lenet-checkpoint"  # checkpoint.pt: lenet.pt's keys, the optimizers and the metrics
VARIANT_LAYERS = {"d2l": "sigmoid, average pooling", "modern": "ReLU, max pooling"}


def network_file(net, variant, arguments, epoch) -> dict:
    """lenet.pt's content: the parameters (on CPU) with what they are."""
    return {"format": LENET_FORMAT, "variant": variant, "arguments": dict(arguments), "versions": versions(),
            "epoch": epoch, "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}


def save(content, path):
    """torch.save through a temporary file and a rename: a run stopped while writing keeps the
    previous file whole."""
    path = Path(path)
    partial = path.with_name(path.name + ".part")
    torch.save(content, partial)
    os.replace(partial, path)


def read(path) -> dict:
    """The content of a lenet.pt or checkpoint.pt, checked to be one (ValueError otherwise)."""
    path = Path(path)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError):
        raise
    except Exception as err:  # torch.load raises many types for a file that is not its own
        raise ValueError(f"{path}: not a file torch.load can read ({type(err).__name__}: {err})") from err
    if not isinstance(content, dict) or content.get("format") not in (LENET_FORMAT, CHECKPOINT_FORMAT):
        raise ValueError(f"{path}: not a lenet.pt or checkpoint.pt of `convtri lenet` (no variant recorded); "
                         "a bare state_dict loads with net.load_state_dict(torch.load(path)) into the LeNet "
                         "variant it was trained as")
    return content


def variant_of(net) -> str | None:
    """"d2l" or "modern" from a LeNet's activations (its parameters cannot tell)."""
    kinds = {type(module) for module in net.modules()}
    return "d2l" if torch.nn.Sigmoid in kinds else "modern" if torch.nn.ReLU in kinds else None


def check_variant(path, saved, wanted, what):
    if wanted != saved:
        raise ValueError(f"{path} holds a {saved} LeNet ({VARIANT_LAYERS[saved]}), but {what} is {wanted} "
                         f"({VARIANT_LAYERS.get(wanted, 'unknown layers')}): its weights would load without "
                         f"complaint and compute something else; use LeNet({saved!r})")


def load_lenet(path, net=None, variant=None, layers=cnn):
    """The network saved in ``path`` (a lenet.pt or checkpoint.pt), in eval mode.

    Loaded into ``net`` when given, else into a new ``LeNet(<saved variant>, layers)``. A
    ``net`` or ``variant`` other than the saved variant raises a ValueError that says so.
    """
    return lenet_of(read(path), path, net, variant, layers)


def lenet_of(content, path, net=None, variant=None, layers=cnn):
    """``load_lenet`` on the ``content`` already read from ``path``."""
    saved = content["variant"]
    if variant is not None:
        check_variant(path, saved, variant, "the variant asked for")
    if net is None:
        net = LeNet(saved, layers)
    else:
        check_variant(path, saved, variant_of(net), "the network given")
    net.load_state_dict(content["state_dict"])
    return net.eval()
