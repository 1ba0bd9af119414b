"""`ArchitectureLogger`: records router and allocation probabilities during a search."""

import os
import warnings

import keras
import numpy as np

from keras_branching import distributed
from keras_branching.layers.allocation_mask import AllocationMask
from keras_branching.layers.gumbel_router import GumbelRouter


def find_architecture_layers(model):
    """Every `GumbelRouter` and `AllocationMask` of `model`, nested ones included.

    Args:
        model: a Keras model or layer.

    Returns:
        A list of layers, each once, in the order of the model's layers.
    """
    found, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, (GumbelRouter, AllocationMask)):
            found.append(layer)
        for child in getattr(layer, "layers", None) or []:
            if child is not layer:
                visit(child)

    visit(model)
    return found


def _probabilities(layer):
    """The layer's probability matrix, float32 numpy, rows x columns."""
    if isinstance(layer, GumbelRouter):
        return layer.parent_probabilities()  # (children, parents)
    return layer.probabilities()  # (tasks, components)


def _axis_names(layer):
    """Names of the matrix's rows and columns, for tags and labels."""
    if isinstance(layer, GumbelRouter):
        return "child", "parent"
    return "task", "component"


class ArchitectureLogger(keras.callbacks.Callback):
    """Records the probabilities of every router and allocation each epoch.

    At the end of every epoch the callback reads, for every `GumbelRouter`
    of the model, `parent_probabilities()` (a `(num_children, num_parents)`
    matrix: the probability that each child reads each parent) and, for
    every `AllocationMask`, `probabilities()` (a `(num_tasks,
    num_components)` matrix: the probability that each task uses each
    component). Layers are found recursively, also inside nested models.
    The matrices are kept in `history`; `plot()` draws their evolution.

    With `log_dir` set the callback also writes them to TensorBoard: one
    scalar per entry (tag `"<layer>/child_<c>_parent_<p>"` or
    `"<layer>/task_<t>_component_<k>"`) and, with `log_images`, an image of
    the whole matrix (tag `"<layer>/matrix"`, white is 1, black 0). Writing
    uses `tf.summary`, imported only then; without TensorFlow the callback
    warns once and only records. Under several processes
    (`keras.distribution` on JAX) only process 0 writes; every process
    records.

    Args:
        log_dir: optional directory of the TensorBoard event files (the
            callback writes into its `architecture` subdirectory).
        log_images: whether to write the matrix images too.
        layer_names: optional list of layer names to record; by default
            every router and allocation mask.

    Attributes:
        history: dict, layer name -> list of numpy float32 matrices, one per
            recorded epoch.
        epochs: list of the recorded epochs (1-based, continued across
            several `fit` calls).

    Example:

    >>> import keras, numpy as np
    >>> from keras_branching.layers.gumbel_router import GumbelRouter
    >>> inputs = keras.Input((3,))
    >>> parents = [keras.layers.Dense(2)(inputs), keras.layers.Dense(2)(inputs)]
    >>> children = GumbelRouter(3, seed=0, name="router")(parents)
    >>> model = keras.Model(inputs, keras.layers.Concatenate()(children))
    >>> model.compile("sgd", "mse")
    >>> logger = ArchitectureLogger()
    >>> x = np.zeros((8, 3), "float32")
    >>> _ = model.fit(x, np.zeros((8, 6)), epochs=2, verbose=0, callbacks=[logger])
    >>> records = logger.history["router"]
    >>> len(records), records[-1].shape
    (2, (3, 2))
    """

    def __init__(self, log_dir=None, log_images=True, layer_names=None):
        super().__init__()
        if log_dir is not None and not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(
                f"Expected `log_dir` to be a path or None. Received: log_dir={log_dir!r}"
            )
        if layer_names is not None:
            if isinstance(layer_names, str) or not all(isinstance(n, str) for n in layer_names):
                raise TypeError(
                    "Expected `layer_names` to be a list of layer names or None. "
                    f"Received: layer_names={layer_names!r}"
                )
            layer_names = list(layer_names)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.log_images = bool(log_images)
        self.layer_names = layer_names
        self.history = {}
        self.epochs = []
        self._layers = None
        self._writer = None
        self._tf = None

    def _find_layers(self):
        layers = find_architecture_layers(self.model)
        if self.layer_names is not None:
            by_name = {layer.name: layer for layer in layers}
            missing = [n for n in self.layer_names if n not in by_name]
            if missing:
                raise ValueError(
                    f"Expected `layer_names` to name routers or allocation masks of the model. "
                    f"Received: layer_names={self.layer_names!r}; not found: {missing}; "
                    f"available: {sorted(by_name)}"
                )
            layers = [by_name[n] for n in self.layer_names]
        named, taken = [], set()
        for layer in layers:
            name, copy = layer.name, 1
            while name in taken:  # the same name in two nested models
                copy += 1
                name = f"{layer.name}_{copy}"
            taken.add(name)
            named.append((name, layer))
        return named

    def _open_writer(self):
        if self.log_dir is None or self._writer is not None or not distributed.is_chief():
            return
        try:
            import tensorflow as tf
        except ImportError:
            warnings.warn(
                "ArchitectureLogger: TensorFlow is not installed, so nothing is written "
                f"to log_dir={self.log_dir!r}; the probabilities are still recorded.",
                stacklevel=2,
            )
            self.log_dir = None
            return
        self._tf = tf
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "architecture"))

    def on_train_begin(self, logs=None):
        self._layers = None
        self._open_writer()

    def on_epoch_end(self, epoch, logs=None):
        if self._layers is None:
            self._layers = self._find_layers()
        step = self.epochs[-1] + 1 if self.epochs else epoch + 1
        self.epochs.append(step)
        matrices = {}
        for name, layer in self._layers:
            matrix = np.array(_probabilities(layer), dtype="float32")
            self.history.setdefault(name, []).append(matrix)
            matrices[name] = (layer, matrix)
        if self._writer is not None:
            self._write(matrices, step)

    def _write(self, matrices, step):
        tf = self._tf
        with self._writer.as_default(step=step):
            for name, (layer, matrix) in matrices.items():
                row_name, column_name = _axis_names(layer)
                for r in range(matrix.shape[0]):
                    for c in range(matrix.shape[1]):
                        tf.summary.scalar(
                            f"{name}/{row_name}_{r}_{column_name}_{c}", float(matrix[r, c])
                        )
                if self.log_images:
                    # Each entry becomes a square of pixels, so small matrices stay visible.
                    scale = max(1, min(32, 256 // max(matrix.shape)))
                    image = np.kron(matrix, np.ones((scale, scale), "float32"))
                    tf.summary.image(f"{name}/matrix", image[None, :, :, None])
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def plot(self, layer_name=None, path=None):
        """Draws how the recorded probabilities evolved, epoch by epoch.

        One row per layer. On the left, the probabilities against the epoch,
        one colour per child (router) or task (allocation): every entry of
        the matrix, with a legend, when it has at most 12 entries; otherwise
        one line per row, with a colour bar of the rows: for a router, the
        probability of the parent the child ends up choosing; for an
        allocation, whose entries are independent, the expected share of
        the components the task uses (the mean of its row). A dotted line
        marks the uniform probability of a router, or the 0.5 above which an
        allocation uses a component at inference. On the right, the last
        recorded matrix as a heat map.

        Args:
            layer_name: optional name of one recorded layer; by default all.
            path: optional file name; the figure is saved there (by
                process 0 only under several processes).

        Returns:
            The matplotlib `Figure`.

        Raises:
            ValueError: if nothing was recorded, or for an unknown name.
        """
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        if not self.history:
            raise ValueError("Nothing recorded yet: pass the logger to `fit(callbacks=...)` first.")
        if layer_name is None:
            names = list(self.history)
        elif layer_name in self.history:
            names = [layer_name]
        else:
            raise ValueError(
                f"Expected `layer_name` to be a recorded layer, one of {list(self.history)}. "
                f"Received: layer_name={layer_name!r}"
            )
        layers = dict(self._layers or [])
        shapes = [self.history[n][-1].shape for n in names]
        heights = [min(8.0, max(2.6, 0.9 + 0.16 * shape[0])) for shape in shapes]
        width_map = max(3.2, 1.4 + 0.28 * max(shape[1] for shape in shapes))
        fig, axes = plt.subplots(
            len(names),
            2,
            figsize=(5.5 + width_map, sum(heights)),
            gridspec_kw={"height_ratios": heights, "width_ratios": [5.5, width_map]},
            squeeze=False,
        )
        epochs = self.epochs[-len(self.history[names[0]]) :]
        for (ax_lines, ax_map), name, shape in zip(axes, names, shapes):
            layer = layers.get(name)
            row_name, column_name = _axis_names(layer) if layer is not None else ("row", "column")
            stack = np.stack(self.history[name])  # (epochs, rows, columns)
            xs = epochs[-len(stack) :] if len(epochs) >= len(stack) else range(1, len(stack) + 1)
            cmap = plt.get_cmap("viridis")
            rows, columns = shape
            few = rows * columns <= 12
            allocation = isinstance(layer, AllocationMask)
            xs = list(xs)
            if few:
                styles = ["-", "--", ":", "-."]
                for r in range(rows):
                    for c in range(columns):
                        ax_lines.plot(
                            xs,
                            stack[:, r, c],
                            color=cmap(r / max(rows - 1, 1)),
                            linestyle=styles[c % len(styles)],
                            linewidth=1.3,
                            marker="o" if len(xs) <= 12 else None,
                            markersize=3,
                            label=f"{row_name} {r}, {column_name} {c}",
                        )
                title = f"{name}: {row_name}-{column_name} probabilities"
            else:
                # Too many entries for one line each: one line per row. A router's
                # row is a distribution: follow the parent the child ends up
                # choosing. An allocation's entries are independent: follow the
                # expected share of components the task uses.
                if allocation:
                    lines = stack.mean(axis=2)
                    title = f"{name}: expected share of the {column_name}s each {row_name} uses"
                else:
                    chosen = stack[-1].argmax(axis=1)
                    lines = stack[:, np.arange(rows), chosen]
                    title = f"{name}: probability of each {row_name}'s final {column_name}"
                for r in range(rows):
                    ax_lines.plot(
                        xs,
                        lines[:, r],
                        color=cmap(r / max(rows - 1, 1)),
                        linewidth=1.0,
                        marker="o" if len(xs) <= 12 else None,
                        markersize=2,
                    )
            reference = None  # a dotted line: (height, label)
            if allocation and few:
                reference = (0.5, "used above")
            elif not allocation and columns > 1:
                reference = (1.0 / columns, "uniform")
            if reference:
                ax_lines.axhline(
                    reference[0], color="gray", linestyle=":", linewidth=0.9, label=reference[1]
                )
            ax_lines.set_ylim(-0.03, 1.03)
            ax_lines.set_xlabel("epoch", fontsize=8)
            shares = allocation and not few
            ax_lines.set_ylabel("expected share" if shares else "probability", fontsize=8)
            ax_lines.set_title(title, fontsize=9)
            ax_lines.tick_params(labelsize=7)
            if len(xs) <= 12:
                ax_lines.set_xticks(list(xs))
            if few:
                ax_lines.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
            else:
                if reference:
                    ax_lines.legend(fontsize=6, loc="upper left")
                mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, rows - 1))
                bar = fig.colorbar(mappable, ax=ax_lines, pad=0.01, fraction=0.04)
                bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
                bar.set_label(row_name, fontsize=7)
                bar.ax.tick_params(labelsize=6)
            image = ax_map.imshow(stack[-1], vmin=0.0, vmax=1.0, cmap="Blues", aspect="auto")
            ax_map.set_title(f"epoch {xs[-1]}", fontsize=9)
            ax_map.set_xlabel(column_name, fontsize=8)
            ax_map.set_ylabel(row_name, fontsize=8)
            for axis, count in ((ax_map.xaxis, columns), (ax_map.yaxis, rows)):
                step = max(1, int(np.ceil(count / 20)))
                axis.set_ticks(range(0, count, step))
            ax_map.tick_params(labelsize=6)
            if rows * columns <= 64:
                for r in range(rows):
                    for c in range(columns):
                        value = stack[-1, r, c]
                        ax_map.text(
                            c,
                            r,
                            f"{value:.2f}",
                            ha="center",
                            va="center",
                            fontsize=6,
                            color="white" if value > 0.6 else "black",
                        )
            fig.colorbar(image, ax=ax_map, pad=0.02, fraction=0.06).ax.tick_params(labelsize=6)
        fig.tight_layout()
        if path is not None and distributed.is_chief():
            fig.savefig(path, dpi=110)
        return fig
