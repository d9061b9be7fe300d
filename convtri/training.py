"""`convtri lenet`: train the chapter's LeNet on our ops, optionally beside a torch.nn twin,
on one process or under torchrun (DDP)."""
import csv
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from convtri import data
from convtri.figures import plot_curves, plot_filters
from convtri.models import LeNet, TorchLeNet

# Defaults per dataset. Fashion-MNIST: the chapter's recipe. Digits (the offline default, run
# through Triton's interpreter on CPU): ReLU/max-pool LeNet with momentum, which reaches 0.9 test
# accuracy within a few epochs, so a plain `convtri lenet` takes minutes on 2 CPU cores.
RECIPES = {
    "fashion-mnist": dict(variant="d2l", epochs=10, batch_size=256, lr=0.9, momentum=0.0),
    "digits": dict(variant="modern", epochs=3, batch_size=32, lr=0.02, momentum=0.9),
}


@dataclass
class Run:
    """One process's view of a (possibly distributed) run."""
    device: torch.device
    rank: int = 0
    world_size: int = 1
    held: list = field(default_factory=list)  # the tensors handed to collectives, until finish()

    @property
    def is_main(self):
        return self.rank == 0

    def hold(self, *tensors):
        """Keep tensors given to a collective alive until finish(). A gloo worker thread that
        drops the last reference to a Python tensor needs the GIL; if that happens while the main
        thread, holding the GIL, joins the workers in the process group's destructor, both wait
        forever (seen under torchrun: rank 1 hung after its last all_gather)."""
        self.held.extend(tensors)
        return tensors

    def finish(self):
        """Tear down torch.distributed; call it once the DDP models are gone."""
        if self.world_size > 1:
            dist.destroy_process_group()
        self.held.clear()

    def say(self, *args):
        if self.is_main:
            print(*args, flush=True)


def start(device_choice):
    """The device, and torch.distributed when launched by torchrun (WORLD_SIZE > 1)."""
    if device_choice == "auto":
        device_choice = "cuda" if torch.cuda.is_available() else "cpu"
    if device_choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("convtri lenet: --device cuda, but torch sees no CUDA GPU")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Run(torch.device(device_choice))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_choice == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Run(device, rank, world_size)


def make_loaders(train, test, batch_size, seed, run):
    """Shuffled training batches (a DistributedSampler's share under DDP) and test batches."""
    generator = torch.Generator().manual_seed(seed)
    sampler = DistributedSampler(train, run.world_size, run.rank, seed=seed) if run.world_size > 1 else None
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                              generator=generator, drop_last=False)
    return train_loader, DataLoader(test, batch_size=1024)


@torch.no_grad()
def accuracy(net, loader, device):
    net.eval()
    correct = total = 0
    for x, y in loader:
        correct += (net(x.to(device)).argmax(1) == y.to(device)).sum().item()
        total += len(y)
    net.train()
    return correct / max(total, 1)


class Trainee:
    """A network with its optimizer and the running sums of one epoch."""

    def __init__(self, net, lr, momentum, run):
        self.net = net.to(run.device)
        self.model = DistributedDataParallel(self.net) if run.world_size > 1 else self.net
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=lr, momentum=momentum)
        self.reset()

    def reset(self):
        self.loss_sum = self.correct = self.count = 0.0

    def step(self, x, y):
        logits = self.model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.item() * len(y)
        self.correct += (logits.argmax(1) == y).sum().item()
        self.count += len(y)

    def epoch_stats(self, run):
        """(mean loss, train accuracy) of the epoch over every rank."""
        sums = torch.tensor([self.loss_sum, self.correct, self.count], dtype=torch.float64, device=run.device)
        if run.world_size > 1:
            dist.all_reduce(*run.hold(sums))
        loss_sum, correct, count = sums.tolist()
        return loss_sum / max(count, 1), correct / max(count, 1)


def max_parameter_difference(a, b):
    return max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))


def check_replicas(net, run):
    """DDP keeps every rank's parameters identical; verify it rather than assume it."""
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(run.world_size)]
    run.hold(flat, *gathered)
    dist.all_gather(gathered, flat)
    spread = max((g - gathered[0]).abs().max().item() for g in gathered)
    run.say(f"ddp: {run.world_size} ranks, largest parameter difference across ranks {spread:.3g}")
    return spread


def resolve(args, dataset):
    """Command-line values, with the dataset's recipe for the ones not given."""
    recipe = RECIPES[dataset]
    return {key: getattr(args, key) if getattr(args, key) is not None else value for key, value in recipe.items()}


def default_out_dir():
    return Path("runs") / datetime.now().strftime("lenet-%Y%m%d-%H%M%S-%f")


def lenet(args):
    """The `convtri lenet` command. Returns the final metrics."""
    run = start(args.device)
    train, test, dataset = data.load_dataset(args.dataset, args.data, download=not args.no_download,
                                             verbose=run.is_main)
    train, test = data.limit(train, args.limit), data.limit(test, args.limit)
    hp = resolve(args, dataset)
    out = Path(args.out) if args.out else default_out_dir()
    if run.is_main:
        out.mkdir(parents=True, exist_ok=True)
    run.say(f"convtri lenet: {dataset}, {len(train)} train / {len(test)} test examples, variant {hp['variant']}, "
            f"{hp['epochs']} epochs, batch {hp['batch_size']}, SGD lr {hp['lr']} momentum {hp['momentum']}, "
            f"device {run.device}" + (f" x {run.world_size} processes" if run.world_size > 1 else "")
            + (" (Triton interpreter)" if run.device.type == "cpu" else ""))

    torch.manual_seed(args.seed)
    ours = Trainee(LeNet(hp["variant"]), hp["lr"], hp["momentum"], run)
    twin = None
    if args.compare_torch:
        torch_net = TorchLeNet(hp["variant"])
        torch_net.load_state_dict(ours.net.state_dict())  # the same initial weights
        twin = Trainee(torch_net, hp["lr"], hp["momentum"], run)
    train_loader, test_loader = make_loaders(train, test, hp["batch_size"], args.seed, run)

    rows = []
    for epoch in range(1, hp["epochs"] + 1):
        if isinstance(train_loader.sampler, DistributedSampler):
            train_loader.sampler.set_epoch(epoch)
        for trainee in (ours, twin):
            if trainee:
                trainee.reset()
        ours_seconds = 0.0
        batches = tqdm(train_loader, desc=f"epoch {epoch}/{hp['epochs']}", disable=not run.is_main, leave=False)
        for x, y in batches:  # both networks see the very same batches
            x, y = x.to(run.device), y.to(run.device)
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)
            started = time.perf_counter()
            ours.step(x, y)
            if run.device.type == "cuda":
                torch.cuda.synchronize(run.device)
            ours_seconds += time.perf_counter() - started
            if twin:
                twin.step(x, y)
        loss, train_acc = ours.epoch_stats(run)
        row = dict(epoch=epoch, loss=loss, train_acc=train_acc, test_acc=accuracy(ours.net, test_loader, run.device),
                   examples_per_s=ours.count * run.world_size / max(ours_seconds, 1e-9))
        line = (f"epoch {epoch}: loss {loss:.4f}, train acc {train_acc:.3f}, test acc {row['test_acc']:.3f}, "
                f"{row['examples_per_s']:.0f} examples/s")
        if twin:
            twin_loss, twin_train_acc = twin.epoch_stats(run)
            row.update(torch_loss=twin_loss, torch_train_acc=twin_train_acc,
                       torch_test_acc=accuracy(twin.net, test_loader, run.device),
                       max_param_diff=max_parameter_difference(ours.net, twin.net))
            line += (f" | torch twin: loss {twin_loss:.4f}, train acc {twin_train_acc:.3f}, "
                     f"test acc {row['torch_test_acc']:.3f}; largest parameter difference {row['max_param_diff']:.2e}")
        run.say(line)
        rows.append(row)

    if run.world_size > 1:
        check_replicas(ours.net, run)
    if run.is_main:
        write_outputs(out, rows, ours.net, test, dataset)
        run.say(f"outputs in {out}: metrics.csv, curves.png, filters.png, lenet.pt")
    final = rows[-1]
    run.say(f"final: loss {final['loss']:.4f} train_acc {final['train_acc']:.4f} test_acc {final['test_acc']:.4f} "
            f"examples_per_s {final['examples_per_s']:.1f}")
    del ours, twin  # DDP's reducer holds the process group: let it go first
    run.finish()
    return final


def write_outputs(out, rows, net, test, dataset):
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_curves(rows, out / "curves.png")
    image, label = test[0]
    plot_filters(net, image.to(next(net.parameters()).device), out / "filters.png",
                 f"learned C1 kernels and their feature maps of a test image ({data.CLASS_NAMES[dataset][label]})")
    torch.save({k: v.cpu() for k, v in net.state_dict().items()}, out / "lenet.pt")
