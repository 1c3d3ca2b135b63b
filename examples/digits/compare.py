"""Centralised training vs. a simulated federated run of the digits package, side by side.

    python compare.py [--clients 4] [--rounds 10] [--epochs 2] [--lr 0.3] [--batch-size 16] [--non-iid]

The federated run calls the package's own train/validate entry points in-process (models go
through .npz files as with a real client) and averages the updates weighted by num_examples
(FedAvg). The centralised run trains the same network from the same seed on all training data
for the same number of passes (rounds x local epochs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent / "client"))

# The package's own model.py, found through the path above.
import model


def weighted_average(models: list[model.Weights], weights: list[int]) -> model.Weights:
    total = float(sum(weights))
    return [
        sum(m[i] * (n / total) for m, n in zip(models, weights, strict=True)) for i in range(len(models[0]))
    ]


def federated(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    global_path = workdir / "global.npz"
    model.save_model(model.init_weights(seed=0), global_path)
    metrics: dict[str, float] = {}
    for round_no in range(1, args.rounds + 1):
        updates: list[model.Weights] = []
        counts: list[int] = []
        for index in range(args.clients):
            out = workdir / f"update-{index}.npz"
            meta = model.train(
                str(global_path),
                str(out),
                client_index=index,
                num_clients=args.clients,
                non_iid=args.non_iid,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
            )
            updates.append(model.load_model(out))
            counts.append(int(meta["num_examples"]))
        model.save_model(weighted_average(updates, counts), global_path)
        report = workdir / "validation.json"
        metrics = model.validate(str(global_path), str(report), client_index=0, num_clients=args.clients)
        print(
            f"round {round_no:2d}: test_accuracy={metrics['test_accuracy']:.4f} test_loss={metrics['test_loss']:.4f}"
        )
    return json.loads((workdir / "validation.json").read_text())


def centralised(args: argparse.Namespace) -> dict[str, float]:
    data = model.client_split(0, 1)
    trained = model.sgd(
        model.init_weights(seed=0),
        data.x_train,
        data.y_train,
        epochs=args.rounds * args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        rng=np.random.default_rng(0),
    )
    loss, accuracy = model.evaluate(trained, data.x_test, data.y_test)
    return {"test_accuracy": accuracy, "test_loss": loss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2, help="local epochs per round")
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--non-iid", action="store_true", help="label-skewed split between clients")
    args = parser.parse_args(argv)

    started = time.monotonic()
    central = centralised(args)
    with tempfile.TemporaryDirectory(prefix="digits-compare-") as tmp:
        fed = federated(args, Path(tmp))
    gap = central["test_accuracy"] - fed["test_accuracy"]
    split = "non-IID" if args.non_iid else "IID"
    print()
    print(f"{'run':<34} {'test_accuracy':>13} {'test_loss':>10}")
    passes = args.rounds * args.epochs
    print(
        f"{f'centralised ({passes} epochs)':<34} {central['test_accuracy']:>13.4f} {central['test_loss']:>10.4f}"
    )
    label = f"federated ({args.clients} clients, {args.rounds} rounds, {split})"
    print(f"{label:<34} {fed['test_accuracy']:>13.4f} {fed['test_loss']:>10.4f}")
    print(f"gap: {gap * 100:+.2f} points   ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
