"""`convtri lenet`: train the chapter's LeNet on our ops, optionally beside a torch.nn twin, on one
process or under torchrun (DDP). After every epoch the run saves metrics.csv and checkpoint.pt,
so that a run stopped at any point keeps what it learned and can go on (--resume)."""
import csv
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from convtri import convert
from convtri.graphs import GraphedStep
from convtri.lenet import checkpoint, data
from convtri.lenet.command import CommandError, UsageError, pick_device
from convtri.lenet.figures import plot_curves, plot_filters
from convtri.lenet.models import LeNet, TorchLeNet
from convtri.lenet.settings import (EVAL_OPTIONS, RESUME_OPTIONS, check_options, check_out, describe, load_data,
                                    read_saved, resolve, resume_settings)

LONG_RUN_S = 600  # a CPU run estimated longer than this says so, and how to shorten it
ESTIMATE_AFTER_BATCHES, ESTIMATE_AFTER_S = 4, 10.0  # the first estimate: after this many batches or seconds
CHECK_EVERY = 8  # batches between readings of the loss sum: the non-finite loss check, a progress update
EVAL_SPEEDUP = 3  # an evaluation example costs about a third of a training one (forward only), until measured
RUN_FILES = ("metrics.csv", "checkpoint.pt", "lenet.pt", "curves.png", "filters.png")


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
        """Print on rank 0, above the progress bar when one is showing."""
        if self.is_main:
            tqdm.write(" ".join(map(str, args)), file=sys.stdout)
            sys.stdout.flush()

    def synchronize(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def one_cpu_thread():
    """On CPU, one thread for torch and for numpy's BLAS, unless the user chose a count
    (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS). Triton's interpreter multiplies small blocks with
    numpy, where a second BLAS thread gains nothing and, on a busy machine, costs: a LeNet run on
    2 cores under load trained 17 examples/s with the default threads, 40 with one."""
    if any(name in os.environ for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")):
        return
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        return
    threadpool_limits(1)


def start(device_choice):
    """The device, and torch.distributed when launched by torchrun (WORLD_SIZE > 1)."""
    device_choice = pick_device(device_choice)
    if device_choice == "cpu":
        one_cpu_thread()
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


# ----------------------------------------------------------------------------- training

def make_loaders(train, test, batch_size, run):
    """Training batches (a DistributedSampler's share under DDP) and test batches. The shuffle
    generator is reseeded per epoch (new_epoch), so a resumed run sees the same batches."""
    generator = torch.Generator()
    sampler = DistributedSampler(train, run.world_size, run.rank) if run.world_size > 1 else None
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                              generator=generator, drop_last=False)
    return train_loader, DataLoader(test, batch_size=1024)


def new_epoch(loader, seed, epoch):
    loader.generator.manual_seed(seed * 1_000_003 + epoch)
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.seed = seed
        loader.sampler.set_epoch(epoch)


@torch.no_grad()
def split_metrics(net, loader, device):
    """(mean cross-entropy, accuracy) of ``net`` over ``loader``, summed on the device and read once."""
    net.eval()
    sums, total = torch.zeros(2, dtype=torch.float64, device=device), 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = net(x)
        sums[0] += torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        sums[1] += (logits.argmax(1) == y).sum()
        total += len(y)
    net.train()
    loss, correct = sums.tolist()
    return loss / max(total, 1), correct / max(total, 1)


def make_optimizer(parameters, settings, capturable=False):
    """The recipe's optimizer; ``capturable``: its update can run inside a CUDA graph (Adam
    keeps its step count on the device then; SGD's update is capturable as it is)."""
    if settings["optimizer"] == "adam":
        return torch.optim.Adam(parameters, lr=settings["lr"], capturable=capturable)
    return torch.optim.SGD(parameters, lr=settings["lr"], momentum=settings["momentum"])


class Trainee:
    """A network with its optimizer and the running sums of one epoch, kept on the device: a step
    launches its work and returns without waiting for it (``check_loss`` and ``epoch_stats`` read
    the sums). ``cuda_graph``: after GRAPH_AFTER_STEPS eager steps of the training shape (the
    first batch's), capture the whole step in a CUDA graph and replay it for every batch of that
    shape (convtri/graphs.py); a batch of another shape (an epoch's short last one) runs eagerly
    and is never captured. If the capture fails, say why in one line and go on eagerly."""
    GRAPH_AFTER_STEPS = 3  # eager steps first: Triton compiles and autotunes, the optimizer makes its state

    def __init__(self, net, settings, run, cuda_graph=False):
        self.net = net.to(run.device)
        self.model = DistributedDataParallel(self.net) if run.world_size > 1 else self.net
        self.optimizer = make_optimizer(self.net.parameters(), settings, capturable=cuda_graph)
        self.run, self.cuda_graph, self.graph = run, cuda_graph, None
        self.training_shape, self.eager_steps = None, 0  # eager steps of the training shape
        self.reset()

    def reset(self):
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.run.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.run.device)
        self.count, self.seconds = 0, 0.0

    def _step(self, x, y):
        """Forward, cross-entropy, backward, update, with the gradients already cleared: what a
        CUDA graph captures. Returns (loss, correct predictions) as tensors."""
        logits = self.model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), (logits.argmax(1) == y).sum()

    def step(self, x, y):
        """One training step, its loss and correct predictions added to the sums on the device
        (nothing waits for it): the one place to change how a step runs."""
        shape = (x.shape, y.shape)
        if self.training_shape is None:
            self.training_shape = shape
        if (self.cuda_graph and self.graph is None and shape == self.training_shape
                and self.eager_steps >= self.GRAPH_AFTER_STEPS):
            self.optimizer.zero_grad()
            self._capture(x, y)
        if self.graph is not None and self.graph.fits(x, y):
            loss, correct = self.graph(x, y)  # the graph's outputs: added below before the next replay
        else:
            self.optimizer.zero_grad()
            loss, correct = self._step(x, y)
            self.eager_steps += shape == self.training_shape
        self.loss_sum += loss * len(y)
        self.correct += correct
        self.count += len(y)

    def _capture(self, x, y):
        try:
            self.graph = GraphedStep(self._step, x, y)
        except Exception as e:  # noqa: BLE001 (any failure: the eager step still works)
            self.cuda_graph = False
            self.optimizer.zero_grad()
            self.run.say(f"--cuda-graph: capture failed ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                         "training goes on without CUDA graphs")

    def timed_step(self, x, y, run):
        """A step timed on its own, the device synchronised before and after it (--compare-torch
        times the two networks' steps apart)."""
        run.synchronize()
        started = time.perf_counter()
        self.step(x, y)
        run.synchronize()
        self.seconds += time.perf_counter() - started

    def epoch_stats(self, run):
        """(mean loss, train accuracy, examples/s) of the epoch over every rank."""
        sums = torch.stack([self.loss_sum, self.correct.double(),
                            torch.tensor(float(self.count), dtype=torch.float64, device=run.device)])
        if run.world_size > 1:
            dist.all_reduce(*run.hold(sums))
        loss_sum, correct, count = sums.tolist()
        return loss_sum / max(count, 1), correct / max(count, 1), count / max(self.seconds, 1e-9)

    def state(self):
        return {"state_dict": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load(self, state):
        self.net.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(with_capturable_of(self.optimizer, state["optimizer"]))


def with_capturable_of(optimizer, saved):
    """An optimizer's ``saved`` state with ``optimizer``'s own ``capturable`` flags. A checkpoint
    holds the flags of the run that wrote it, which ``load_state_dict`` would restore (and place
    Adam's step counts by): a --cuda-graph run's resumed without graphs, or on CPU, then fails its
    first step, and one without graphs resumed with them fails every capture."""
    groups = [{**saved_group, "capturable": group["capturable"]} if "capturable" in group else saved_group
              for saved_group, group in zip(saved["param_groups"], optimizer.param_groups)]
    return {**saved, "param_groups": groups}


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


def duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"


@dataclass
class Clock:
    """The run's time: the first estimate from the first batches, then from whole epochs."""
    run: Run
    settings: dict
    train_size: int  # examples per epoch on this rank
    test_size: int
    epochs_left: int
    started: float = field(default_factory=time.perf_counter)
    estimated: bool = False
    first_batch_done: float = 0.0  # when the first batch of this session was launched

    def after_batch(self, batches, examples, spent, last):
        """Print the whole run's estimate once, from the batches after the first (which pays for
        compilation and autotuning on a GPU): ``examples`` trained since then in ``spent()``
        seconds, a reading that waits for the device; after ESTIMATE_AFTER_BATCHES batches or
        ESTIMATE_AFTER_S seconds, at the latest after the ``last`` batch of the first epoch."""
        if batches == 1:
            self.first_batch_done = time.perf_counter()
        if self.estimated or batches < 2:
            return
        if not (batches > ESTIMATE_AFTER_BATCHES or last
                or time.perf_counter() - self.first_batch_done >= ESTIMATE_AFTER_S):
            return
        self.estimated = True
        rate = examples / max(spent(), 1e-9)
        total = self.epochs_left * (self.train_size + self.test_size / EVAL_SPEEDUP) / rate
        line = (f"estimate: about {duration(total)} for {self.epochs_left} epochs "
                f"({rate:.0f} examples/s over batches 2-{batches})")
        if total > LONG_RUN_S and self.run.device.type == "cpu":
            line += (f"; that is long for a CPU, which runs our kernels through Triton's interpreter: shorten it "
                     f"with --limit N (now {self.settings['limit'] or 'all'} examples per split) or --epochs N, "
                     "or train on a GPU (--device cuda)")
        self.run.say(line)

    def left(self, epochs_done):
        """Time left after ``epochs_done`` epochs of this session, from their wall time."""
        spent = time.perf_counter() - self.started
        return spent / epochs_done * (self.epochs_left - epochs_done)


def train_epoch(epoch, ours, twin, loaders, run, clock, settings):
    """One epoch over the training batches, both networks on the very same batches; its metrics row.

    Nothing waits for the device per step: the loss and accuracy sums stay there, read every
    CHECK_EVERY batches (``check_loss``, which also catches a non-finite loss then, at most
    CHECK_EVERY - 1 steps late) and at the epoch's end. The epoch's examples/s is over the wall
    time of its training loop; with --compare-torch each network's steps are timed apart, which
    synchronises around every step."""
    train_loader, test_loader = loaders
    new_epoch(train_loader, settings["seed"], epoch)
    trainees = [trainee for trainee in (ours, twin) if trainee]
    for trainee in trainees:
        trainee.reset()
    show_bar = run.is_main and sys.stdout.isatty()  # elsewhere (a log file, a pipe) the epoch lines alone
    batches = tqdm(train_loader, desc=f"epoch {epoch}/{settings['epochs']}", disable=not show_bar, leave=False,
                   file=sys.stdout)
    run.synchronize()
    started = time.perf_counter()

    def spent():
        """Seconds this epoch's steps took so far, once the device has caught up."""
        run.synchronize()
        return sum(t.seconds for t in trainees) if twin else time.perf_counter() - started

    first_seconds = first_count = 0.0
    for i, (x, y) in enumerate(batches, 1):
        x, y = x.to(run.device), y.to(run.device)
        for trainee in trainees:
            if twin:
                trainee.timed_step(x, y, run)
            else:
                trainee.step(x, y)
        last = i == len(train_loader)
        if i % CHECK_EVERY == 0 or last:
            check_loss(ours, epoch, i, settings, batches if show_bar else None)
        if i == 1:
            first_seconds, first_count = spent(), ours.count
        clock.after_batch(i, ours.count - first_count, lambda: spent() - first_seconds, last)
    if not twin:
        ours.seconds = spent()
    loss, train_acc, rate = ours.epoch_stats(run)
    test_loss, test_acc = split_metrics(ours.net, test_loader, run.device)
    row = dict(epoch=epoch, loss=loss, train_acc=train_acc, test_loss=test_loss, test_acc=test_acc,
               examples_per_s=rate * run.world_size)
    if twin:
        twin_loss, twin_train_acc, twin_rate = twin.epoch_stats(run)
        row.update(torch_loss=twin_loss, torch_train_acc=twin_train_acc,
                   torch_test_acc=split_metrics(twin.net, test_loader, run.device)[1],
                   torch_examples_per_s=twin_rate * run.world_size,
                   max_param_diff=max_parameter_difference(ours.net, twin.net))
    return row


def check_loss(trainee, epoch, batch, settings, bar=None):
    """Read the epoch's loss sum after ``batch`` (it waits for the device): a non-finite one is
    an error naming the batches since the last check, where it became so; else the progress
    ``bar`` shows the mean loss so far."""
    total = trainee.loss_sum.item()
    if not math.isfinite(total):
        since = (batch - 1) // CHECK_EVERY * CHECK_EVERY + 1
        where = f"batch {batch}" if since == batch else f"batches {since}-{batch}"
        raise CommandError(f"the loss became {total} in epoch {epoch}, {where}: the step is too large; "
                           f"lower --lr (now {settings['lr']:g})")
    if bar is not None:
        bar.set_postfix_str(f"loss {total / max(trainee.count, 1):.4f}", refresh=False)


def epoch_line(row, settings, left):
    line = (f"epoch {row['epoch']}/{settings['epochs']}: loss {row['loss']:.4f}, train acc {row['train_acc']:.3f}, "
            f"test acc {row['test_acc']:.3f}, {row['examples_per_s']:.0f} examples/s")
    if "torch_loss" in row:
        line += (f" | torch twin: loss {row['torch_loss']:.4f}, train acc {row['torch_train_acc']:.3f}, "
                 f"test acc {row['torch_test_acc']:.3f}, {row['torch_examples_per_s']:.0f} examples/s; "
                 f"largest parameter difference {row['max_param_diff']:.2e}")
    return line + (f" (about {duration(left)} left)" if row["epoch"] < settings["epochs"] else "")


# ----------------------------------------------------------------------------- saving

@dataclass
class Saver:
    """Writes a run's folder, created at the first save (so a run stopped before its first epoch
    ends leaves none); with --overwrite, the outputs of an earlier run there go at that moment."""
    out: Path
    settings: dict
    overwrite: bool = False
    saved_epoch: int = 0  # the last epoch on disk

    def epoch(self, rows, ours, twin):
        """metrics.csv and checkpoint.pt after an epoch."""
        if not self.out.exists() or self.overwrite:
            self.out.mkdir(parents=True, exist_ok=True)
            for name in RUN_FILES if self.overwrite else ():
                (self.out / name).unlink(missing_ok=True)
            self.overwrite = False
        with open(self.out / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[-1]))
            writer.writeheader()
            writer.writerows(rows)
        epoch = rows[-1]["epoch"]
        content = checkpoint.network_file(ours.net, self.settings["variant"], self.settings, epoch)
        content.update(format=checkpoint.CHECKPOINT_FORMAT, optimizer=ours.optimizer.state_dict(), rows=rows,
                       twin=twin.state() if twin else None)
        checkpoint.save(content, self.out / "checkpoint.pt")
        self.saved_epoch = epoch

    def finish(self, rows, net, test, title):
        """curves.png, filters.png and lenet.pt once the last epoch is done."""
        plot_curves(rows, self.out / "curves.png", title)
        image, label = test[0]
        plot_filters(net, image.to(next(net.parameters()).device), self.out / "filters.png",
                     f"{title}\nlearned C1 kernels and their feature maps of a test image "
                     f"({data.CLASS_NAMES[self.settings['dataset']][label]})")
        checkpoint.save(checkpoint.network_file(net, self.settings["variant"], self.settings, rows[-1]["epoch"]),
                        self.out / "lenet.pt")

    def interrupted(self, epoch):
        if not self.saved_epoch:
            return f"interrupted in epoch {epoch}, before any epoch ended: nothing saved"
        return (f"interrupted in epoch {epoch}; {self.out} keeps metrics.csv and checkpoint.pt of epoch "
                f"{self.saved_epoch}: go on with `convtri lenet --resume {self.out}`")


# ----------------------------------------------------------------------------- the commands

def lenet(args):
    """The `convtri lenet` command. Returns the final metrics row."""
    if args.eval_only:
        check_options(args, EVAL_OPTIONS, "--eval-only")
        return evaluate(args)
    if args.resume:
        check_options(args, RESUME_OPTIONS, "--resume")
        settings, saved = resume_settings(args)
        out = Path(args.resume)
    else:
        settings, saved, out = None, None, check_out(args)
    run = start(args.device)
    try:
        if args.cuda_graph and (run.device.type != "cuda" or run.world_size > 1):
            raise UsageError("--cuda-graph needs one CUDA GPU (--device cuda, without torchrun); leave it out")
        return train(args, run, settings, saved, out)
    finally:
        run.finish()


def train(args, run, settings, saved, out):
    """Load the data, train epoch after epoch saving each, and write the figures and lenet.pt."""
    dataset = settings["dataset"] if settings else args.dataset
    root = settings["data"] if settings else args.data
    train_set, test_set, dataset = load_data(dataset, root, not args.no_download, run.is_main)
    settings = settings or resolve(args, dataset, run.device.type)
    full = len(train_set), len(test_set)
    train_set, test_set = data.limit(train_set, settings["limit"] or None), data.limit(test_set, settings["limit"] or None)
    info = describe(settings, run, train_set, test_set)
    if len(train_set) < full[0]:
        info += f" (--limit {settings['limit']} of {full[0]} / {full[1]}; --limit 0 for all)"
    run.say(f"convtri lenet: {info}")

    torch.manual_seed(settings["seed"])
    net = LeNet(settings["variant"])
    if settings.get("fuse"):  # a checkpoint from before --no-fuse existed: unfused
        convert(net, fuse=True)  # the activations into the convolutions' kernels; the same parameters and keys
    ours = Trainee(net, settings, run, cuda_graph=args.cuda_graph)
    twin = None
    if settings["compare_torch"]:
        twin = Trainee(TorchLeNet(settings["variant"]), settings, run)
        twin.net.load_state_dict(ours.net.state_dict())  # the same initial weights
    rows = []
    if saved:
        ours.load(saved)
        if twin:
            twin.load(saved["twin"])
        rows = list(saved["rows"])
        run.say(f"resumed {out} after epoch {saved['epoch']}")
    saver = Saver(out, settings, overwrite=args.overwrite and not saved, saved_epoch=saved["epoch"] if saved else 0)
    loaders = make_loaders(train_set, test_set, settings["batch_size"], run)
    first = len(rows) + 1
    clock = Clock(run, settings, math.ceil(len(train_set) / run.world_size), len(test_set),
                  settings["epochs"] - first + 1)
    epoch = first
    try:
        for epoch in range(first, settings["epochs"] + 1):
            rows.append(train_epoch(epoch, ours, twin, loaders, run, clock, settings))
            if run.is_main:
                saver.epoch(rows, ours, twin)
            run.say(epoch_line(rows[-1], settings, clock.left(epoch - first + 1)))
    except KeyboardInterrupt:
        run.say(saver.interrupted(epoch))
        raise

    if run.world_size > 1:
        check_replicas(ours.net, run)
    final = rows[-1]
    if run.is_main:
        saver.finish(rows, ours.net, test_set, f"convtri lenet: {info}")
        run.say(f"outputs in {out}: {', '.join(RUN_FILES)}")
    run.say(f"final: loss {final['loss']:.4f} train_acc {final['train_acc']:.4f} test_acc {final['test_acc']:.4f} "
            f"examples_per_s {final['examples_per_s']:.1f}")
    if twin:
        run.say(speed_line(final, run))
    del ours, twin  # DDP's reducer holds the process group: let it go before run.finish()
    return final


def speed_line(row, run):
    ours, theirs = row["examples_per_s"], row["torch_examples_per_s"]
    how = "our kernels in Triton's interpreter, the twin on torch's CPU kernels" if run.device.type == "cpu" \
        else "the twin on cuDNN"
    return (f"speed: convtri {ours:.1f} examples/s, torch twin {theirs:.1f} examples/s: ours runs at "
            f"{ours / theirs:.2g}x the twin's ({how}; last epoch, training steps only)")


def evaluate(args):
    """--eval-only CHECKPOINT: the saved network's loss and accuracy on its dataset's test split."""
    saved = read_saved(args.eval_only, "--eval-only")
    if args.variant:
        try:
            checkpoint.check_variant(args.eval_only, saved["variant"], args.variant, "--variant")
        except ValueError as err:
            raise UsageError(f"{err}; leave --variant out") from None
    device = pick_device(args.device)
    settings = saved["arguments"]
    dataset = args.dataset if args.dataset != "auto" else settings["dataset"]
    _, test_set, dataset = load_data(dataset, args.data or settings["data"], not args.no_download, True)
    limit = settings["limit"] if args.limit is None else args.limit
    test_set = data.limit(test_set, limit or None)
    net = checkpoint.lenet_of(saved, args.eval_only).to(device)
    loss, accuracy = split_metrics(net, DataLoader(test_set, batch_size=1024), torch.device(device))
    print(f"eval: {args.eval_only}, {saved['variant']} LeNet after epoch {saved['epoch']}, on {len(test_set)} "
          f"{dataset} test examples: test_loss {loss:.4f} test_acc {accuracy:.4f}")
    return dict(test_loss=loss, test_acc=accuracy)
