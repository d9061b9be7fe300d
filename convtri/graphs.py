"""CUDA graphs: a call captured once and replayed, with no host work per kernel (issue 16).

Public, ``convtri.graphs``: ``capture`` serves any callable (perf/ uses it to time kernels
alone); ``GraphedStep`` a whole training step (forward, loss, backward, optimizer update), as
``convtri lenet --cuda-graph`` runs it."""
import torch


def capture(build, warmup=3):
    """A CUDA graph of one call of ``build()``'s callable, and that callable.

    The callable is built and warmed up (cuDNN's benchmark, Triton's autotuner and the
    allocator settle: none of them may run inside a capture) on a side stream, which the
    capture then uses: a backward captured there runs on the stream of its forward, so the
    forward of a saved output must run on it too. Replay with ``graph.replay()``; keep the
    callable alive as long as the graph (it holds the graph's inputs).
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn = build()
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        fn()
    torch.cuda.synchronize()
    return graph, fn


class GraphedStep:
    """``step(x, y)``, a training step that returns tensors, captured in a CUDA graph on static
    copies of a batch: a call copies its batch in and replays, and returns the static outputs
    (read them before the next call). Capture it after eager steps of the same shape have
    run (kernels compiled and tuned, optimizer state made) and with the gradients set to None,
    so that the backward allocates them in the graph's memory; the captured call itself runs
    nothing, so the batch it was captured on is then replayed, not skipped."""

    def __init__(self, step, x, y):
        self.x, self.y = x.clone(), y.clone()
        self.outputs = None

        def build():
            def run():
                self.outputs = step(self.x, self.y)
            return run
        self.graph, self._run = capture(build, warmup=0)

    def fits(self, x, y):
        """Whether a batch has the captured shapes (a last, smaller batch runs eagerly)."""
        return x.shape == self.x.shape and y.shape == self.y.shape

    def __call__(self, x, y):
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.outputs
