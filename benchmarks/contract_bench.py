"""Benchmark: what the generic serving path's request handling costs next to the model.

    .venv/bin/python benchmarks/contract_bench.py [--repeat 300]

In one process, no cluster: the fraud MLP (a ``FraudPyfunc`` with a fitted
preprocessor and untrained weights: the cost does not depend on the weights) and a
scikit-learn pipeline on the same inputs, each saved and loaded as an MLflow pyfunc
with its signature, and the fraud serving contract. Per batch of 1 and 32 records,
side by side in one run (median of ``--repeat`` calls, in rounds of ten calls of
every cell in turn, after a warm-up):

- ``validate``:   ``RequestSchema.validate`` of each record (the router's check);
- ``frame``:      ``model_frame``: the signature's columns as arrays (the predictor);
- ``enforce``:    MLflow's own schema enforcement of that frame (what
  ``PyFuncModel.predict`` runs before the model);
- ``model``:      the flavor's predict without enforcement: what the predictor calls
  (``services.predictor.app.raw_predict``), the router having validated the records;
- ``pyfunc``:     ``PyFuncModel.predict`` (enforcement + model), what it called before;
- for the MLP also ``transform`` (its preprocessing alone) and ``forward`` (the network
  alone on the preprocessed batch), and ``model_over_forward`` (issue 14's ratio).

The question it answers (issue 12): validating against the signature must not cost
milliseconds; MLflow's per-call enforcement is known to be slow. Results:
benchmarks/results/contract.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    from pipelines.training.model import FEATURE_INPUTS

    rng = np.random.default_rng(seed)
    data: dict[str, Any] = {c: rng.gamma(2.0, 10.0, n) for c in FEATURE_INPUTS}
    data["amount"] = rng.gamma(2.0, 40.0, n)
    data["timestamp"] = pd.date_range("2026-08-01", periods=n, freq="37min", tz="UTC").strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
    data["category"] = rng.choice(["grocery", "fuel", "travel"], n)
    data["country"] = rng.choice(["US", "GB"], n)
    return pd.DataFrame(data)


def _models(folder: Path) -> dict[str, Any]:
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from mlflow.types.schema import ColSpec, Schema

    from pipelines.training import gbt
    from pipelines.training.model import FraudMLP, FraudPyfunc, Preprocessor

    train = _frame(2000)
    labels = (train["amount"] > 120).to_numpy()
    prep = Preprocessor.fit(train)
    net = FraudMLP(prep.width, [64, 32])
    mlp = FraudPyfunc(prep.to_dict(), {"width": prep.width, "hidden": [64, 32]}, net.state_dict())
    example = train.head(5)
    mlflow.pyfunc.save_model(folder / "mlp", python_model=mlp,
                             signature=infer_signature(example, mlp.predict(None, example)))  # fmt: skip
    trees = gbt._pipeline(0).fit(train, labels)
    signature = infer_signature(example)
    signature.outputs = Schema([ColSpec("double", n) for n in gbt.OUTPUTS])
    mlflow.sklearn.save_model(trees, folder / "gbt", signature=signature,
                              pyfunc_predict_fn="predict_proba",
                              skops_trusted_types=[f"{gbt.__name__}.hour_features", *gbt._TRUSTED])  # fmt: skip
    return {name: mlflow.pyfunc.load_model(str(folder / name)) for name in ("mlp", "gbt")}


def _interleaved_ms(fns: dict[str, Any], repeat: int) -> dict[str, float]:
    """Median milliseconds of each function, timed in rounds (ten calls of each per
    round, after a warm-up), so that a noisy moment of a shared machine hits them all
    alike and their ratios hold, while each runs with its caches warm as it would
    alone."""
    import statistics
    import time

    for _ in range(min(50, repeat)):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeat // 10)):
        for name, fn in fns.items():
            for _ in range(10):
                started = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - started)
    return {name: statistics.median(times) * 1000 for name, times in samples.items()}


def _cell(model: Any, contract: Any, schema: Any, n: int, repeat: int) -> dict[str, float]:
    from mlflow.models.utils import _enforce_schema

    from services.predictor.app import model_frame, raw_predict

    frame = _frame(n, seed=n)
    records = [{"transaction_id": f"t{i}", "customer_id": f"c_{i}", "merchant_id": "m_1", **row}
               for i, row in enumerate(frame.to_dict(orient="records"))]  # fmt: skip
    rows = [schema.validate(r)[0] for r in records]
    built = model_frame(contract, rows, None)
    inputs = model.metadata.signature.inputs
    fast = raw_predict(model)
    fns = {
        "validate": lambda: [schema.validate(r) for r in records],
        "frame": lambda: model_frame(contract, rows, None),
        "enforce": lambda: _enforce_schema(built, inputs),
        "model": lambda: fast(built),
        "pyfunc": lambda: model.predict(built),
    }
    mlp = model.metadata.flavors.get("python_function", {}).get("loader_module") == (
        "mlflow.pyfunc.model"
    )
    if mlp:
        import torch

        python_model = model.unwrap_python_model()  # the fraud MLP: its two halves alone
        prep, net = python_model._load()
        tensor = torch.from_numpy(prep.transform(built))

        def forward() -> None:
            with torch.no_grad():
                net(tensor)

        fns["transform"] = lambda: prep.transform(built)
        fns["forward"] = forward
    cell = _interleaved_ms(fns, repeat)
    if mlp:
        cell["model_over_forward"] = cell["model"] / cell["forward"]
    cell["validate_per_record_us"] = cell["validate"] / n * 1000
    return cell


def main(argv: list[str] | None = None) -> int:
    import torch
    from shipyard.contract import contract_from, contract_tags

    from pipelines.training.model import serving_contract
    from services.router.schema import RequestSchema

    parser = argparse.ArgumentParser(prog="benchmarks/contract_bench.py")
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as in the Serve replicas
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        models = _models(Path(tmp))
        for name, model in models.items():
            signature = model.metadata.signature
            contract = contract_from(name, "1", signature, contract_tags(**serving_contract()))
            schema = RequestSchema(contract, online=False)  # every input from the request
            for n in (1, 32):
                cell = _cell(model, contract, schema, n, args.repeat)
                results[f"{name}_batch{n}"] = {k: round(v, 4) for k, v in cell.items()}
                print(f"{name:4s} batch {n:2d}: " + "  ".join(
                    f"{k} {v:.3f}" for k, v in cell.items() if k != "validate_per_record_us"),
                    flush=True)  # fmt: skip
    doc = {
        "command": "python benchmarks/contract_bench.py " + " ".join(sys.argv[1:]),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "unit": "milliseconds per call (median), validate_per_record_us in microseconds",
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "contract.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS / 'contract.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
