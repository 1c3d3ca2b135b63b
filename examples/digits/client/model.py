"""A small numpy MLP on scikit-learn's bundled digits data, as a federated compute package.

    python model.py build [seed.npz]                 write the initial (seed) model
    python model.py train <in_model> <out_model>     local training; writes <out_model>-metadata
    python model.py validate <in_model> <out_json>   metrics on the local split and the test split

Self-contained (numpy and scikit-learn only) so it runs unchanged under fedplane's client and
FEDn 0.9.5's client. Models are numpyhelper .npz files: keys "0".."3" = W1, b1, W2, b2.

Which part of the data a client trains on:
- client index: env FEDPLANE_CLIENT_INDEX or FEDN_CLIENT_INDEX (0-based); otherwise the trailing
  number of FEDPLANE_CLIENT_NAME (set by fedplane's client), otherwise the trailing number of the
  nearest folder of the working directory that ends in digits (e.g. ".../client3/package/client"),
  taken modulo the number of clients; otherwise 0;
- number of clients: env FEDPLANE_NUM_CLIENTS or FEDN_NUM_CLIENTS, default 1;
- FEDPLANE_NON_IID=1 gives each client two label-sorted shards instead of an even random split.
A fixed 20% test split (same seed everywhere) is held out from every client's training data.
Hyperparameters: FEDPLANE_EPOCHS (2), FEDPLANE_BATCH_SIZE (16), FEDPLANE_LR (0.3).
A slower device: FEDPLANE_EPOCH_SECONDS makes each local epoch take at least that many seconds
(training pads its own time with a sleep), so a client with 5x the value trains 5x slower.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INPUTS = 64
HIDDEN = 64
CLASSES = 10
DATA_SEED = 42
TEST_FRACTION = 0.2

Weights = list[np.ndarray]


# --------------------------------------------------------------------------- model


def init_weights(seed: int = 0, hidden: int = HIDDEN) -> Weights:
    rng = np.random.default_rng(seed)
    return [
        rng.normal(0.0, np.sqrt(2.0 / INPUTS), (INPUTS, hidden)),
        np.zeros(hidden),
        rng.normal(0.0, np.sqrt(2.0 / hidden), (hidden, CLASSES)),
        np.zeros(CLASSES),
    ]


def _forward(weights: Weights, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w1, b1, w2, b2 = weights
    hidden = np.maximum(x @ w1 + b1, 0.0)
    logits = hidden @ w2 + b2
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return hidden, probs


def evaluate(weights: Weights, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(cross-entropy loss, accuracy)."""
    _, probs = _forward(weights, x)
    loss = float(-np.mean(np.log(probs[np.arange(len(y)), y] + 1e-12)))
    accuracy = float(np.mean(probs.argmax(axis=1) == y))
    return loss, accuracy


def sgd(
    weights: Weights,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    rng: np.random.Generator,
) -> Weights:
    """Mini-batch SGD on softmax cross-entropy; returns new arrays."""
    w1, b1, w2, b2 = (w.copy() for w in weights)
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            xb, yb = x[batch], y[batch]
            hidden, probs = _forward([w1, b1, w2, b2], xb)
            grad_logits = probs
            grad_logits[np.arange(len(yb)), yb] -= 1.0
            grad_logits /= len(yb)
            grad_w2 = hidden.T @ grad_logits
            grad_b2 = grad_logits.sum(axis=0)
            grad_hidden = (grad_logits @ w2.T) * (hidden > 0)
            grad_w1 = xb.T @ grad_hidden
            grad_b1 = grad_hidden.sum(axis=0)
            w1 -= lr * grad_w1
            b1 -= lr * grad_b1
            w2 -= lr * grad_w2
            b2 -= lr * grad_b2
    return [w1, b1, w2, b2]


def save_model(weights: Weights, path: str | os.PathLike[str]) -> None:
    # Write to an open file so numpy does not append ".npz" to the client's temp path.
    with open(path, "wb") as fh:
        np.savez(fh, **{str(i): w for i, w in enumerate(weights)})


def load_model(path: str | os.PathLike[str]) -> Weights:
    with np.load(path, allow_pickle=False) as data:
        weights = [np.asarray(data[str(i)], dtype=np.float64) for i in range(len(data.files))]
    shapes = [w.shape for w in weights]
    if len(weights) != 4 or shapes[0][0] != INPUTS or shapes[2][1] != CLASSES:
        raise ValueError(f"{path} is not a digits MLP (shapes {shapes})")
    return weights


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (1797 8x8 images), read from its data file when it is there.

    Reading the CSV directly skips importing scikit-learn, which costs seconds per entry-point
    run on a busy machine; load_digits() is the fallback and gives the same arrays.
    """
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data, digits.target.astype(np.int64)


def _all_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    pixels, y = _load_digits()
    x = pixels.astype(np.float64) / 16.0
    order = np.random.default_rng(DATA_SEED).permutation(len(y))
    n_test = round(len(y) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def client_split(index: int, num_clients: int, *, non_iid: bool = False) -> Split:
    """The training part of client `index` of `num_clients`, and the shared test split."""
    if num_clients < 1 or not 0 <= index < num_clients:
        raise ValueError(f"client index {index} out of range for {num_clients} clients")
    x_train, y_train, x_test, y_test = _all_data()
    rng = np.random.default_rng(DATA_SEED + 1)
    if non_iid:
        # Two label-sorted shards per client: each sees only a few digits.
        by_label = np.argsort(y_train, kind="stable")
        shards = np.array_split(by_label, 2 * num_clients)
        shard_order = rng.permutation(len(shards))
        mine = np.concatenate([shards[shard_order[2 * index]], shards[shard_order[2 * index + 1]]])
    else:
        mine = np.array_split(rng.permutation(len(y_train)), num_clients)[index]
    return Split(x_train[mine], y_train[mine], x_test, y_test)


def _trailing_number(text: str) -> int | None:
    match = re.search(r"(\d+)$", text)
    return int(match.group(1)) if match else None


def client_position(env: dict[str, str] | None = None, cwd: str | None = None) -> tuple[int, int]:
    """(client index, number of clients) from the environment, the client name or the work dir."""
    env = dict(os.environ) if env is None else env
    num_clients = int(env.get("FEDPLANE_NUM_CLIENTS") or env.get("FEDN_NUM_CLIENTS") or 1)
    explicit = env.get("FEDPLANE_CLIENT_INDEX") or env.get("FEDN_CLIENT_INDEX")
    if explicit is not None and explicit != "":
        return int(explicit), num_clients
    number = _trailing_number(env.get("FEDPLANE_CLIENT_NAME", ""))
    if number is None:
        for part in reversed(Path(cwd or os.getcwd()).parts):
            # Only names like "client3" or "worker-12": not hashes such as "pkg-4d87b6".
            match = re.fullmatch(r"[A-Za-z_.-]*?(\d+)", part)
            if match:
                number = int(match.group(1))
                break
    return (number % num_clients if number is not None else 0), num_clients


def _hyperparameters() -> dict[str, float | int]:
    return {
        "epochs": int(os.environ.get("FEDPLANE_EPOCHS", 2)),
        "batch_size": int(os.environ.get("FEDPLANE_BATCH_SIZE", 16)),
        "lr": float(os.environ.get("FEDPLANE_LR", 0.3)),
    }


def _pad_training(started: float, epochs: int) -> None:
    """Sleep until `epochs` epochs took FEDPLANE_EPOCH_SECONDS each (a slower device's pace)."""
    per_epoch = float(os.environ.get("FEDPLANE_EPOCH_SECONDS") or 0)
    remaining = started + per_epoch * epochs - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


# --------------------------------------------------------------------------- entry points


def build(out_path: str = "../seed.npz") -> None:
    save_model(init_weights(seed=0), out_path)


def train(
    in_path: str,
    out_path: str,
    *,
    client_index: int | None = None,
    num_clients: int | None = None,
    non_iid: bool | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
) -> dict[str, float | int]:
    """Train from `in_path`, write `out_path` and `out_path-metadata`; returns the metadata."""
    env_index, env_clients = client_position()
    index = env_index if client_index is None else client_index
    clients = env_clients if num_clients is None else num_clients
    skewed = os.environ.get("FEDPLANE_NON_IID") == "1" if non_iid is None else non_iid
    params = _hyperparameters()
    epochs = int(params["epochs"] if epochs is None else epochs)
    batch_size = int(params["batch_size"] if batch_size is None else batch_size)
    lr = float(params["lr"] if lr is None else lr)

    started = time.monotonic()
    split = client_split(index, clients, non_iid=skewed)
    weights = load_model(in_path)
    # Seeded by client and incoming model: reruns reproduce, rounds and clients differ.
    seed = zlib.crc32(b"".join(w.tobytes() for w in weights)) + 7919 * index
    trained = sgd(
        weights,
        split.x_train,
        split.y_train,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        rng=np.random.default_rng(seed),
    )
    _pad_training(started, epochs)
    save_model(trained, out_path)
    metadata = {"num_examples": len(split.y_train), "batch_size": batch_size, "epochs": epochs, "lr": lr}
    with open(f"{out_path}-metadata", "w") as fh:
        json.dump(metadata, fh)
    return metadata


def validate(
    in_path: str,
    out_path: str,
    *,
    client_index: int | None = None,
    num_clients: int | None = None,
    non_iid: bool | None = None,
) -> dict[str, float]:
    env_index, env_clients = client_position()
    index = env_index if client_index is None else client_index
    clients = env_clients if num_clients is None else num_clients
    skewed = os.environ.get("FEDPLANE_NON_IID") == "1" if non_iid is None else non_iid
    split = client_split(index, clients, non_iid=skewed)
    weights = load_model(in_path)
    train_loss, train_acc = evaluate(weights, split.x_train, split.y_train)
    test_loss, test_acc = evaluate(weights, split.x_test, split.y_test)
    metrics = {
        "training_loss": train_loss,
        "training_accuracy": train_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
    }
    with open(out_path, "w") as fh:
        json.dump(metrics, fh)
    return metrics


def main(argv: list[str]) -> int:
    usage = "usage: model.py build [out] | train <in> <out> | validate <in> <out>"
    if not argv:
        print(usage, file=sys.stderr)
        return 2
    command, args = argv[0], argv[1:]
    if command == "build" and len(args) <= 1:
        build(*args)
    elif command == "train" and len(args) == 2:
        train(*args)
    elif command == "validate" and len(args) == 2:
        validate(*args)
    else:
        print(usage, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
