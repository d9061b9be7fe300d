"""Figures of a LeNet run: training curves, and the learned C1 kernels with their feature maps."""
import textwrap

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


# The torch twin is drawn first, wide and pale, so that our curve stays visible on top of it
# where the two coincide (they do, to within 1e-4, when our kernels are right).
CURVES = (("torch_", dict(linewidth=5, alpha=0.35, zorder=2), "torch twin"),
          ("", dict(linewidth=1.5, zorder=3), "convtri"))
TITLE_WIDTH = 110  # characters per title line at fontsize 9 in a 10-inch figure


def wrapped(title):
    return "\n".join(textwrap.fill(line, TITLE_WIDTH) for line in title.splitlines())


METRICS = (("loss", "o", "loss"), ("train_acc", "o", "train acc"), ("test_acc", "s", "test acc"))


def plot_curves(rows, path, title=""):
    """Loss, train accuracy and test accuracy against epochs, and the torch twin's when present,
    under ``title`` (the run's settings)."""
    epochs = [row["epoch"] for row in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4.4))
    for prefix, style, who in CURVES:
        if prefix + "loss" not in rows[0]:
            continue
        for (key, marker, what), color in zip(METRICS, ("tab:red", "tab:blue", "tab:green")):
            ax = ax_loss if key == "loss" else ax_acc
            ax.plot(epochs, [row[prefix + key] for row in rows], color=color, label=f"{who} {what}",
                    marker=marker if not prefix else None, **style)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(wrapped(title), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def plot_filters(net, image, path, title):
    """The first conv layer's kernels (top row) and the feature maps they make of ``image``
    after the activation (bottom row), next to the image itself."""
    conv, activation = net[0], net[1]
    maps = activation(conv(image[None]))[0].float().cpu().numpy()
    kernels = conv.weight[:, 0].float().cpu().numpy()
    count = kernels.shape[0]
    fig, axes = plt.subplots(2, count + 1, figsize=(1.6 * (count + 1), 3.4))
    axes[0, 0].imshow(image[0].float().cpu().numpy(), cmap="gray")
    axes[0, 0].set_title("input", fontsize=8)
    axes[1, 0].axis("off")
    for i in range(count):
        axes[0, i + 1].imshow(kernels[i], cmap="coolwarm")
        axes[0, i + 1].set_title(f"kernel {i}", fontsize=8)
        axes[1, i + 1].imshow(maps[i], cmap="viridis")
        axes[1, i + 1].set_title(f"feature map {i}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(wrapped(title), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
