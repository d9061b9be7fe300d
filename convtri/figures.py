"""Figures of a LeNet run: training curves, and the learned C1 kernels with their feature maps."""
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def plot_curves(rows, path):
    """Loss, train accuracy and test accuracy against epochs; the torch twin's, dashed, when present."""
    epochs = [row["epoch"] for row in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for prefix, style, label in (("", "-", "convtri"), ("torch_", "--", "torch twin")):
        if prefix + "loss" not in rows[0]:
            continue
        ax_loss.plot(epochs, [row[prefix + "loss"] for row in rows], style, marker="o", label=f"{label} loss")
        ax_acc.plot(epochs, [row[prefix + "train_acc"] for row in rows], style, marker="o", label=f"{label} train acc")
        ax_acc.plot(epochs, [row[prefix + "test_acc"] for row in rows], style, marker="s", label=f"{label} test acc")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
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
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
