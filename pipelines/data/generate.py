"""Deterministic synthetic card transactions with planted fraud patterns.

The data is generated in fixed-size chunks, each a contiguous slice of the time
period with its own random stream (``default_rng([seed, chunk])``), so memory stays
bounded, rows come out in time order, and the same seed and row count always give
byte-identical data. Planted patterns a model can learn:

- bursts: a compromised card is used several times within minutes;
- unusual amounts: fraud amounts are several times the customer's usual spend;
- risky merchants: a few merchants (skewed to electronics, jewelry, gift cards)
  attract most of the fraud;
- foreign countries: fraud happens abroad far more often than normal spending;
- night time: fraud clusters in the small hours.

Labels arrive late, as chargebacks do: ``label_available_at`` is days after the
transaction (frauds after a chargeback delay, legitimate ones after settlement).

:func:`extend` appends days after a generated dataset's end, in the same world (its
customers and merchants) and optionally a shifted one (:class:`Shift`: new merchants
open and take a share of the spending, amounts grow): new data arriving, for the
monitoring and retraining loop.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from shipyard.errors import DataError

__all__ = ["GenerateConfig", "GenerateResult", "SCHEMA", "Shift", "extend", "generate"]

CHUNK_ROWS = 500_000  # fixed: part of what makes a seed reproducible
MANIFEST = "_manifest.json"
US_PER_S = 1_000_000

HOME_COUNTRIES = np.array(["US", "CA", "GB", "DE", "FR", "ES", "NL", "AU"])
HOME_WEIGHTS = np.array([0.40, 0.08, 0.14, 0.12, 0.10, 0.06, 0.04, 0.06])
FOREIGN_COUNTRIES = np.array(["BR", "MX", "TH", "NG", "RO", "PH"])
COUNTRIES = np.concatenate([HOME_COUNTRIES, FOREIGN_COUNTRIES])
CURRENCY_OF = {"US": "USD", "CA": "CAD", "GB": "GBP", "DE": "EUR", "FR": "EUR",
               "ES": "EUR", "NL": "EUR", "AU": "AUD"}  # fmt: skip
CURRENCIES = np.array(["USD", "CAD", "GBP", "EUR", "AUD"])
HOME_CURRENCY_IDX = np.array([list(CURRENCIES).index(CURRENCY_OF[c]) for c in HOME_COUNTRIES])

CATEGORIES = np.array(["grocery", "restaurant", "fuel", "transport", "online_retail",
                       "electronics", "travel", "entertainment", "jewelry", "gift_cards"])  # fmt: skip
CATEGORY_WEIGHTS = np.array([0.24, 0.18, 0.12, 0.08, 0.14, 0.06, 0.05, 0.08, 0.02, 0.03])
CATEGORY_SCALE = np.array([1.0, 0.8, 1.2, 0.4, 1.5, 4.0, 6.0, 0.9, 5.0, 2.0])
RISKY_CATEGORY_WEIGHTS = np.array([0.02, 0.02, 0.02, 0.02, 0.22, 0.25, 0.05, 0.05, 0.15, 0.20])

SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("customer_id", pa.string()),
        ("merchant_id", pa.string()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("category", pa.string()),
        ("country", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("is_fraud", pa.bool_()),
        ("label_available_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class GenerateConfig:
    """What to generate. Validated on construction, with errors naming the field."""

    rows: int
    seed: int = 0
    start: datetime = datetime(2026, 7, 1, tzinfo=timezone.utc)
    days: int = 120
    fraud_rate: float = 0.012
    customers: int | None = None  # default: about 100 transactions per customer
    merchants: int | None = None  # default: about 500 transactions per merchant

    def __post_init__(self) -> None:
        if not isinstance(self.rows, int) or self.rows <= 0:
            raise DataError(f"rows must be a positive integer, got {self.rows!r}")
        if not 0 <= self.seed < 2**63:
            raise DataError(f"seed must be between 0 and 2**63-1, got {self.seed!r}")
        if not 1 <= self.days <= 3660:
            raise DataError(f"days must be between 1 and 3660, got {self.days!r}")
        if not 0 < self.fraud_rate < 0.5:
            raise DataError(f"fraud_rate must be in (0, 0.5), got {self.fraud_rate!r}")
        if self.start.tzinfo is None:
            object.__setattr__(self, "start", self.start.replace(tzinfo=timezone.utc))
        for name in ("customers", "merchants"):
            value = getattr(self, name)
            if value is not None and value < 10:
                raise DataError(f"{name} must be at least 10, got {value!r}")

    @property
    def n_customers(self) -> int:
        return self.customers or int(np.clip(self.rows // 100, 100, 500_000))

    @property
    def n_merchants(self) -> int:
        return self.merchants or int(np.clip(self.rows // 500, 50, 50_000))


@dataclass(frozen=True)
class Shift:
    """How the world changes in an appended period: ``new_merchants`` merchants open
    (in the customers' home countries, some of them risky) and take ``new_share`` of the
    legitimate spending, and every amount is ``amount_scale`` times what it would have
    been. ``Shift()`` changes nothing but adds the merchants."""

    new_merchants: int = 0
    new_share: float = 0.0
    amount_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.new_merchants <= 1_000_000:
            raise DataError(f"new_merchants must be in [0, 1000000], got {self.new_merchants!r}")
        if not 0 <= self.new_share <= 1:
            raise DataError(f"new_share must be in [0, 1], got {self.new_share!r}")
        if self.new_share > 0 and self.new_merchants == 0:
            raise DataError("new_share > 0 needs new_merchants > 0")
        if not 0.01 <= self.amount_scale <= 100:
            raise DataError(f"amount_scale must be in [0.01, 100], got {self.amount_scale!r}")


@dataclass
class GenerateResult:
    path: Path
    rows: int
    fraud_rows: int
    files: int
    seconds: float
    config: dict = field(default_factory=dict)

    @property
    def fraud_rate(self) -> float:
        return self.fraud_rows / self.rows if self.rows else 0.0


@dataclass
class _World:
    """Customers and merchants, shared by every chunk."""

    cust_country: np.ndarray  # index into HOME_COUNTRIES
    cust_scale: np.ndarray  # typical spend
    cust_weight: np.ndarray  # activity, sums to 1
    merch_country: np.ndarray  # index into COUNTRIES
    merch_category: np.ndarray
    merch_risky: np.ndarray
    merch_by_country: list[np.ndarray]  # merchants in each home country
    risky: np.ndarray
    foreign: np.ndarray


def _world(cfg: GenerateConfig) -> _World:
    rng = np.random.default_rng([cfg.seed, 2**32 - 1])
    nc, nm = cfg.n_customers, cfg.n_merchants
    cust_country = rng.choice(len(HOME_COUNTRIES), size=nc, p=HOME_WEIGHTS)
    cust_scale = rng.lognormal(mean=3.3, sigma=0.6, size=nc)
    activity = rng.gamma(shape=2.0, scale=1.0, size=nc)
    risky = rng.random(nm) < 0.04
    risky[rng.integers(nm)] = True  # at least one
    abroad = rng.random(nm) < 0.12
    merch_country = np.where(
        abroad,
        len(HOME_COUNTRIES) + rng.integers(len(FOREIGN_COUNTRIES), size=nm),
        rng.choice(len(HOME_COUNTRIES), size=nm, p=HOME_WEIGHTS),
    )
    merch_category = np.where(
        risky,
        rng.choice(len(CATEGORIES), size=nm, p=RISKY_CATEGORY_WEIGHTS),
        rng.choice(len(CATEGORIES), size=nm, p=CATEGORY_WEIGHTS),
    )
    by_country = []
    for i in range(len(HOME_COUNTRIES)):
        members = np.flatnonzero(merch_country == i)
        by_country.append(members if len(members) else np.flatnonzero(~abroad)[:1])
    foreign = np.flatnonzero(merch_country >= len(HOME_COUNTRIES))
    if len(foreign) == 0:
        foreign = np.array([nm - 1])
        merch_country[nm - 1] = len(HOME_COUNTRIES)
    return _World(
        cust_country, cust_scale, activity / activity.sum(),
        merch_country, merch_category, risky, by_country, np.flatnonzero(risky), foreign,
    )  # fmt: skip


def _pick_home_merchants(rng: np.random.Generator, w: _World, countries: np.ndarray) -> np.ndarray:
    out = np.empty(len(countries), dtype=np.int64)
    for i, members in enumerate(w.merch_by_country):
        mask = countries == i
        n = int(mask.sum())
        if n:
            out[mask] = members[rng.integers(len(members), size=n)]
    return out


def _with_new_merchants(
    cfg: GenerateConfig, w: _World, n_new: int, salt: int
) -> tuple[_World, list[np.ndarray]]:
    """``w`` plus ``n_new`` merchants (indices after the existing ones), and the new
    ones in each home country."""
    rng = np.random.default_rng([cfg.seed, 2**32 - 2, salt])
    nm = len(w.merch_country)
    country = rng.choice(len(HOME_COUNTRIES), size=n_new, p=HOME_WEIGHTS)
    risky = rng.random(n_new) < 0.04
    category = np.where(
        risky,
        rng.choice(len(CATEGORIES), size=n_new, p=RISKY_CATEGORY_WEIGHTS),
        rng.choice(len(CATEGORIES), size=n_new, p=CATEGORY_WEIGHTS),
    )
    new_ids = nm + np.arange(n_new)
    by_country = [new_ids[country == i] for i in range(len(HOME_COUNTRIES))]
    world = _World(
        w.cust_country, w.cust_scale, w.cust_weight,
        np.concatenate([w.merch_country, country]),
        np.concatenate([w.merch_category, category]),
        np.concatenate([w.merch_risky, risky]),
        w.merch_by_country,
        np.concatenate([w.risky, new_ids[risky]]),
        w.foreign,
    )  # fmt: skip
    return world, by_country


def _chunk(cfg: GenerateConfig, w: _World, index: int, n: int, t0: int, t1: int,
           shift: Shift | None = None, new_by_country: list[np.ndarray] | None = None) -> pa.Table:  # fmt: skip
    """One chunk: ``n`` rows with timestamps (µs since epoch) in [t0, t1); with a
    ``shift``, a share of the legitimate spending moves to the new merchants
    (``new_by_country``) and amounts scale."""
    rng = np.random.default_rng([cfg.seed, index])
    n_fraud = min(int(rng.binomial(n, cfg.fraud_rate)), n)
    n_legit = n - n_fraud

    # Legitimate spending: mostly at home, at the customer's usual scale.
    cust = rng.choice(len(w.cust_weight), size=n_legit, p=w.cust_weight)
    merch = _pick_home_merchants(rng, w, w.cust_country[cust])
    travel = rng.random(n_legit) < 0.03
    merch[travel] = rng.integers(len(w.merch_country), size=int(travel.sum()))
    if shift is not None and shift.new_share > 0 and new_by_country is not None:
        moved = (rng.random(n_legit) < shift.new_share) & ~travel
        home = w.cust_country[cust]
        for i, members in enumerate(new_by_country):
            mask = moved & (home == i)
            if len(members) and mask.any():
                merch[mask] = members[rng.integers(len(members), size=int(mask.sum()))]
    amount = (
        w.cust_scale[cust]
        * CATEGORY_SCALE[w.merch_category[merch]]
        * rng.lognormal(0.0, 0.5, size=n_legit)
    )
    ts = rng.integers(t0, t1, size=n_legit)
    # A little noise: some legitimate-looking rows at risky merchants are fraud too.
    legit_fraud = w.merch_risky[merch] & (rng.random(n_legit) < 0.01)

    # Fraud incidents: bursts on one stolen card, at night, abroad, big amounts.
    sizes = 1 + rng.poisson(2.5, size=max(1, n_fraud))
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n_fraud)) + 1]
    sizes[-1] -= sizes.sum() - n_fraud
    sizes = sizes[sizes > 0]
    f_cust = np.repeat(rng.choice(len(w.cust_weight), size=len(sizes), p=w.cust_weight), sizes)
    day_us = 86_400 * US_PER_S
    start = rng.integers(t0, t1, size=len(sizes))
    night = rng.integers(0, 6 * 3600, size=len(sizes)) * US_PER_S  # 00:00-06:00
    start = np.where(rng.random(len(sizes)) < 0.6, start - start % day_us + night, start)
    # Within an incident, each use follows the previous by ~90 s: a burst.
    elapsed = np.cumsum(rng.exponential(90.0, size=n_fraud) * US_PER_S)
    offsets = elapsed - np.repeat(elapsed[np.cumsum(sizes) - sizes], sizes)
    f_ts = np.clip(np.repeat(start, sizes) + offsets.astype(np.int64), t0, t1 - 1)
    choice = rng.random(n_fraud)
    f_merch = np.where(
        choice < 0.55,
        w.risky[rng.integers(len(w.risky), size=n_fraud)],
        np.where(
            choice < 0.80,
            w.foreign[rng.integers(len(w.foreign), size=n_fraud)],
            rng.integers(len(w.merch_country), size=n_fraud),
        ),
    )
    f_amount = (
        w.cust_scale[f_cust]
        * CATEGORY_SCALE[w.merch_category[f_merch]]
        * rng.uniform(2.5, 10.0, size=n_fraud)
    )

    cust_all = np.concatenate([cust, f_cust])
    merch_all = np.concatenate([merch, f_merch])
    ts_all = np.concatenate([ts, f_ts])
    fraud_all = np.concatenate([legit_fraud, np.ones(n_fraud, dtype=bool)])
    scale = shift.amount_scale if shift is not None else 1.0
    amount_all = np.round(np.concatenate([amount, f_amount]) * scale, 2)
    amount_all = np.maximum(amount_all, 0.01)

    # Labels: chargebacks take days to weeks; legitimate rows settle within a week.
    delay_days = np.where(
        fraud_all,
        1.0 + rng.gamma(2.0, 5.0, size=n),
        2.0 + rng.uniform(0.0, 5.0, size=n),
    )
    label_at = ts_all + (np.minimum(delay_days, 90.0) * day_us).astype(np.int64)

    order = np.argsort(ts_all, kind="stable")
    cust_all, merch_all, ts_all = cust_all[order], merch_all[order], ts_all[order]
    fraud_all, amount_all, label_at = fraud_all[order], amount_all[order], label_at[order]

    first_id = index * CHUNK_ROWS
    ids = pa.array(np.arange(first_id, first_id + n, dtype=np.int64))
    return pa.table(
        {
            "transaction_id": _prefixed("tx_", ids, 12),
            "customer_id": _prefixed("c_", pa.array(cust_all), 7),
            "merchant_id": _prefixed("m_", pa.array(merch_all), 6),
            "amount": pa.array(amount_all),
            "currency": pa.array(CURRENCIES[HOME_CURRENCY_IDX[w.cust_country[cust_all]]]),
            "category": pa.array(CATEGORIES[w.merch_category[merch_all]]),
            "country": pa.array(COUNTRIES[w.merch_country[merch_all]]),
            "timestamp": pa.array(ts_all, type=pa.timestamp("us", tz="UTC")),
            "is_fraud": pa.array(fraud_all),
            "label_available_at": pa.array(label_at, type=pa.timestamp("us", tz="UTC")),
        },
        schema=SCHEMA,
    )


def _prefixed(prefix: str, values: pa.Array, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(values, pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"output path {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DataError(
                f"output directory {out} is not empty",
                hint="pass --overwrite to replace a dataset generated before, or another --out",
            )
        if not (out / MANIFEST).exists():
            raise DataError(
                f"refusing to overwrite {out}: it does not hold a generated dataset "
                f"(no {MANIFEST})",
                hint="choose an empty or new --out directory",
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def generate(
    cfg: GenerateConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> GenerateResult:
    """Write ``cfg.rows`` transactions under ``out`` as ``date=YYYY-MM-DD/part-NNNNN.parquet``."""
    out = Path(out).expanduser()
    _prepare_out(out, overwrite)
    began = time.perf_counter()
    w = _world(cfg)
    n_chunks = -(-cfg.rows // CHUNK_ROWS)
    t_start = int(cfg.start.timestamp()) * US_PER_S
    t_end = t_start + cfg.days * 86_400 * US_PER_S
    bounds = np.linspace(t_start, t_end, n_chunks + 1).astype(np.int64)
    fraud_rows = files = done = 0
    for k in range(n_chunks):
        n = min(CHUNK_ROWS, cfg.rows - k * CHUNK_ROWS)
        table = _chunk(cfg, w, k, n, int(bounds[k]), int(bounds[k + 1]))
        fraud_rows += int(pc.sum(table["is_fraud"]).as_py() or 0)
        files += _write_by_day(table, out, k)
        done += n
        if progress:
            progress(done, cfg.rows)
    seconds = time.perf_counter() - began
    config = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(cfg).items()}
    manifest = {"rows": cfg.rows, "fraud_rows": fraud_rows, "files": files, "config": config,
                "schema": SCHEMA.to_string(), "partitioning": "hive: date=YYYY-MM-DD"}  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return GenerateResult(out, cfg.rows, fraud_rows, files, seconds, config)


def extend(out: str | Path, days: int, *, rows: int | None = None, shift: Shift | None = None,
           progress: Callable[[int, int], None] | None = None) -> GenerateResult:  # fmt: skip
    """Append ``days`` of transactions after the end of the dataset generated under
    ``out`` (and of its earlier extensions): the same customers and merchants, ``rows``
    of them (default: the dataset's daily rate), with the world changed by ``shift``.
    Files, chunk streams and transaction ids are new ones; the manifest lists the
    extension. The same dataset extended the same way is byte-identical."""
    out = Path(out).expanduser()
    try:
        meta = json.loads((out / MANIFEST).read_text())
        base = meta["config"]
        cfg = GenerateConfig(**{**base, "start": datetime.fromisoformat(base["start"])})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{out} does not hold a generated dataset to extend ({exc})",
                        hint="generate one first: `shipyard data generate --rows N`") from None  # fmt: skip
    if not 1 <= days <= 3660:
        raise DataError(f"days must be between 1 and 3660, got {days!r}")
    earlier = meta.get("extensions", [])
    rows = rows if rows is not None else max(1, round(cfg.rows / cfg.days * days))
    if rows <= 0:
        raise DataError(f"rows must be a positive integer, got {rows!r}")
    shift = shift or Shift()
    began = time.perf_counter()
    first_chunk = -(-cfg.rows // CHUNK_ROWS) + sum(e["chunks"] for e in earlier)
    w, new_by_country = _world(cfg), None
    if shift.new_merchants:
        w, new_by_country = _with_new_merchants(cfg, w, shift.new_merchants, first_chunk)
    t_start = (
        int(cfg.start.timestamp()) * US_PER_S
        + (cfg.days + sum(e["days"] for e in earlier)) * 86_400 * US_PER_S
    )
    t_end = t_start + days * 86_400 * US_PER_S
    n_chunks = -(-rows // CHUNK_ROWS)
    bounds = np.linspace(t_start, t_end, n_chunks + 1).astype(np.int64)
    fraud_rows = files = done = 0
    for k in range(n_chunks):
        n = min(CHUNK_ROWS, rows - k * CHUNK_ROWS)
        index = first_chunk + k
        table = _chunk(cfg, w, index, n, int(bounds[k]), int(bounds[k + 1]), shift, new_by_country)
        fraud_rows += int(pc.sum(table["is_fraud"]).as_py() or 0)
        files += _write_by_day(table, out, index)
        done += n
        if progress:
            progress(done, rows)
    start = datetime.fromtimestamp(t_start / US_PER_S, tz=timezone.utc)
    extension = {"start": start.isoformat(), "days": days, "rows": rows, "fraud_rows": fraud_rows,
                 "chunks": n_chunks, "first_chunk": first_chunk, "shift": asdict(shift)}  # fmt: skip
    meta["extensions"] = [*earlier, extension]
    (out / MANIFEST).write_text(json.dumps(meta, indent=2))
    return GenerateResult(out, rows, fraud_rows, files, time.perf_counter() - began, extension)


def _write_by_day(table: pa.Table, out: Path, chunk: int) -> int:
    """Split a time-sorted chunk at day boundaries; one file per (day, chunk)."""
    day = pc.cast(table["timestamp"], pa.int64()).to_numpy() // (86_400 * US_PER_S)
    cuts = np.flatnonzero(np.diff(day)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(day)]])
    for lo, hi in zip(starts, ends, strict=True):
        date = datetime.fromtimestamp(int(day[lo]) * 86_400, tz=timezone.utc).date().isoformat()
        folder = out / f"date={date}"
        folder.mkdir(exist_ok=True)
        pq.write_table(table.slice(lo, hi - lo), folder / f"part-{chunk:05d}.parquet")
    return len(starts)


# -- the entrypoint (``shipyard data generate``, ``python -m pipelines.data.generate``) --


def main(argv: list[str] | None = None) -> int:
    """Generate into ``--out`` (default: the settings' raw data directory)."""
    import argparse
    import sys

    from shipyard.errors import ShipyardError
    from shipyard.settings import load_settings

    from pipelines._cli import fail, int_range, iso_time

    parser = argparse.ArgumentParser(
        prog="shipyard data generate",
        description="Generate synthetic card transactions as date-partitioned parquet.",
    )
    parser.add_argument("--rows", type=int_range(1), required=True, help="how many transactions")
    parser.add_argument("--seed", type=int_range(0, 2**63 - 1), default=0, help="default 0")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: <data_root>/raw/transactions)")  # fmt: skip
    parser.add_argument("--start", type=iso_time, default=None,
                        help="first day, ISO date (default 2026-07-01)")  # fmt: skip
    parser.add_argument("--days", type=int_range(1, 3660), default=120, help="default 120")
    parser.add_argument("--fraud-rate", type=float, default=0.012, help="default 0.012")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a dataset generated there before")  # fmt: skip
    args = parser.parse_args(argv)
    began = time.monotonic()

    def report(done: int, total: int) -> None:
        rate = done / max(time.monotonic() - began, 1e-9)
        print(f"generating: {done:,}/{total:,} rows ({done / total:.0%}, {rate:,.0f} rows/s)",
              file=sys.stderr)  # fmt: skip

    try:
        extra = {"start": args.start} if args.start is not None else {}
        cfg = GenerateConfig(rows=args.rows, seed=args.seed, days=args.days,
                             fraud_rate=args.fraud_rate, **extra)  # fmt: skip
        target = args.out if args.out is not None else load_settings().raw_data_dir
        result = generate(cfg, target, overwrite=args.overwrite, progress=report)
    except ShipyardError as exc:
        return fail(exc)
    print(f"wrote {result.rows:,} transactions ({result.fraud_rows:,} fraud, "
          f"{result.fraud_rate:.2%}) in {result.files} files to {result.path} "
          f"in {result.seconds:.1f}s")  # fmt: skip
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
