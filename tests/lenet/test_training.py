"""How `convtri lenet` steps (issue 21): resuming keeps the optimizer's `capturable` that this run
needs; --cuda-graph captures only a batch of the training shape, after that shape ran eagerly;
the loop reads its sums from the device only every CHECK_EVERY batches and at the epoch's end,
and still catches a non-finite loss there. On CPU, with torch.nn layers (the loop is the
subject here, not our kernels) and the CUDA graph replaced by a stand-in at its boundary."""
import math
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

import convtri
from convtri.lenet import training
from convtri.lenet.command import CommandError
from convtri.lenet.models import LeNet, TorchLeNet

ADAM = dict(optimizer="adam", lr=0.003, momentum=None)
SGD = dict(optimizer="sgd", lr=0.02, momentum=0.9)
CPU = training.Run(torch.device("cpu"))


def batch(size):
    return torch.randn(size, 1, 28, 28), torch.randint(0, 10, (size,))


def trained(settings, steps=2, cuda_graph=False):
    trainee = training.Trainee(TorchLeNet("modern"), settings, CPU, cuda_graph)
    for _ in range(steps):
        trainee.step(*batch(8))
    return trainee


def capturable(trainee):
    return [group["capturable"] for group in trainee.optimizer.param_groups]


def test_graph_checkpoint_resumed_without_graphs_trains():
    # a --cuda-graph run's Adam state, as its checkpoint holds it (read onto the CPU): capturable
    # groups; load_state_dict alone restored the flag, and the first CPU step failed with "If
    # capturable=True, params and state_steps must be on supported devices"
    saved = trained(ADAM).state()
    for group in saved["optimizer"]["param_groups"]:
        group["capturable"] = True
    resumed = training.Trainee(TorchLeNet("modern"), ADAM, CPU)
    resumed.load(saved)
    assert capturable(resumed) == [False]
    resumed.step(*batch(8))
    assert resumed.optimizer.state_dict()["state"][0]["step"].item() == 3  # the saved 2 steps, then one
    assert math.isfinite(resumed.loss_sum.item())


def test_checkpoint_without_graphs_resumed_with_graphs_is_capturable():
    # the flag this run needs, and Adam's step counts where a capturable update keeps them: on
    # the parameters' device, as float32 (on a GPU, inside the graph)
    saved = trained(ADAM).state()
    assert [group["capturable"] for group in saved["optimizer"]["param_groups"]] == [False]
    resumed = training.Trainee(TorchLeNet("modern"), ADAM, CPU, cuda_graph=True)
    resumed.load(saved)
    assert capturable(resumed) == [True]
    for param, state in zip(resumed.net.parameters(), resumed.optimizer.state.values()):
        assert state["step"].device == param.device and state["step"].dtype == torch.float32
        assert state["step"].item() == 2
    for a, b in zip(resumed.optimizer.state.values(), saved["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"])


class FakeGraph:
    """convtri.graphs.GraphedStep's stand-in on CPU: records the batch it is captured on, and
    replays by running the step eagerly."""
    made = []

    def __init__(self, step, x, y):
        self.step, self.shape, self.replays = step, (x.shape, y.shape), 0
        FakeGraph.made.append(self)

    def fits(self, x, y):
        return (x.shape, y.shape) == self.shape

    def __call__(self, x, y):
        self.replays += 1
        return self.step(x, y)


@pytest.fixture
def fake_graph(monkeypatch):
    FakeGraph.made = []
    monkeypatch.setattr(training, "GraphedStep", FakeGraph)
    return FakeGraph.made


def test_capture_takes_a_batch_of_the_training_shape(fake_graph):
    # 16 examples a batch, 5 in an epoch's last: the 4th batch is short (it used to be captured,
    # or to fail the capture, its plans made and autotuned inside it); the capture waits for the
    # 5th, the 4th full one after 3 eager steps of that shape, and replays every full batch after
    trainee = training.Trainee(TorchLeNet("modern"), SGD, CPU, cuda_graph=True)
    sizes = [16, 16, 16, 5, 16, 16, 5, 16]
    for size in sizes:
        trainee.step(*batch(size))
    (graph,) = fake_graph
    assert graph.shape[0][0] == 16 and graph.replays == 3  # batches 5, 6 and 8
    assert trainee.eager_steps == 3 and trainee.count == sum(sizes)


def test_short_first_epoch_batch_never_captured(fake_graph):
    # a shape that is not the training shape (the first batch's) is never captured, however
    # often it ran eagerly: here a short last batch over 4 epochs of 2 batches
    trainee = training.Trainee(TorchLeNet("modern"), SGD, CPU, cuda_graph=True)
    for _ in range(4):
        for size in (16, 5):
            trainee.step(*batch(size))
    (graph,) = fake_graph
    assert graph.shape[0][0] == 16 and graph.replays == 1  # the 4th full batch: after 3 eager ones


def loader(batches, size=16):
    data = TensorDataset(torch.randn(batches * size, 1, 28, 28), torch.randint(0, 10, (batches * size,)))
    return torch.utils.data.DataLoader(data, batch_size=size, generator=torch.Generator())


def run_epoch(trainee, batches, settings=SGD):
    clock = training.Clock(CPU, dict(settings, limit=0), batches * 16, 16, 1)
    return training.train_epoch(1, trainee, None, (loader(batches), loader(1)), CPU, clock,
                                dict(settings, seed=0, epochs=1))


def test_sums_are_read_every_few_batches_not_every_step(monkeypatch):
    """20 batches: the loop waits for the device (reads a tensor, or synchronises) at the checks
    after batches 8, 16 and 20, after batch 1 and at the estimate (each once a run), the epoch's
    start and end, and its statistics; never per step. (Reads elsewhere, such as the
    DataLoader's of its CPU seed, are not the loop's.)"""
    waits = []

    def spy(name, read):
        return lambda t: (waits.append(name) if sys._getframe(1).f_code.co_filename == training.__file__ else None,
                          read(t))[1]
    monkeypatch.setattr(torch.Tensor, "item", spy("item", torch.Tensor.item))
    monkeypatch.setattr(torch.Tensor, "tolist", spy("tolist", torch.Tensor.tolist))
    monkeypatch.setattr(training.Run, "synchronize", lambda run: waits.append("sync"))
    trainee = training.Trainee(TorchLeNet("modern"), SGD, CPU)
    row = run_epoch(trainee, 20)
    assert waits.count("item") == 3  # check_loss after batches 8, 16, 20
    assert waits.count("sync") == 4  # the epoch's start, after batch 1, the estimate, the epoch's end
    assert waits.count("tolist") == 2  # the epoch's sums, the test split's
    assert trainee.loss_sum.device == CPU.device and trainee.count == 320
    assert math.isfinite(row["loss"]) and row["examples_per_s"] > 0


def test_non_finite_loss_caught_at_the_next_check(monkeypatch):
    # the loss of batch 10 is inf: the check after batch 16 (CHECK_EVERY = 8) stops the run,
    # naming batches 9-16, six steps late
    trainee = training.Trainee(TorchLeNet("modern"), SGD, CPU)
    steps, real = [], trainee._step

    def step(x, y):
        steps.append(len(steps) + 1)
        loss, correct = real(x, y)
        return (loss + math.inf if len(steps) == 10 else loss), correct
    monkeypatch.setattr(trainee, "_step", step)
    with pytest.raises(CommandError, match=r"the loss became inf in epoch 1, batches 9-16: .* lower --lr"):
        run_epoch(trainee, 20)
    assert len(steps) == 16 and training.CHECK_EVERY == 8


@pytest.mark.gpu
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_cuda_graph_training_matches_eager(optimizer):
    """`convtri lenet --cuda-graph`: after its eager steps the whole step is captured and
    replayed; the parameters follow the eager run's, batch after batch, a smaller last
    batch included."""
    from convtri.lenet.training import Run, Trainee
    settings = dict(optimizer=optimizer, lr=0.01, momentum=0.9 if optimizer == "sgd" else None)
    run = Run(torch.device("cuda"))
    torch.manual_seed(0)
    nets = [convtri.convert(LeNet("modern"), fuse=True) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    eager, graphed = Trainee(nets[0], settings, run), Trainee(nets[1], settings, run, cuda_graph=True)
    batches = [(torch.randn(32, 1, 28, 28, device="cuda"), torch.randint(0, 10, (32,), device="cuda"))
               for _ in range(6)] + [(torch.randn(8, 1, 28, 28, device="cuda"), torch.randint(0, 10, (8,), device="cuda"))]
    for x, y in batches:
        eager.step(x, y)
        graphed.step(x, y)
        assert eager.loss_sum.item() == pytest.approx(graphed.loss_sum.item(), rel=1e-4, abs=1e-5)
    assert graphed.graph is not None and graphed.graph.fits(*batches[0])
    for p, q in zip(eager.net.parameters(), graphed.net.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
