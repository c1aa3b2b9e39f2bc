"""The ``shipyard`` command line: parse arguments, load settings, call the library, print.

Errors derived from :class:`~shipyard.errors.ShipyardError` become one line on
stderr and a non-zero exit; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from datetime import datetime, timezone
from typing import Any

import click

from shipyard.errors import ConfigError, ShipyardError
from shipyard.settings import Settings, load_settings


class _Ctx:
    def __init__(self, config: str | None, debug: bool) -> None:
        self.config = config
        self.debug = debug
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings


def _say(msg: str) -> None:
    click.echo(msg, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(dir_okay=False), envvar="SHIPYARD_CONFIG",
              help="settings file (YAML); also SHIPYARD_CONFIG")  # fmt: skip
@click.option("--debug", is_flag=True, help="show tracebacks on errors")
@click.pass_context
def cli(ctx: click.Context, config: str | None, debug: bool) -> None:
    """Shipyard: features, training, serving and canaries on Ray."""
    ctx.obj = _Ctx(config, debug)


# -- the local platform -------------------------------------------------------


@cli.command()
@click.option("--workers", type=click.IntRange(0, 16), default=None,
              help="Ray worker nodes besides the head (default: ray.workers, 1)")  # fmt: skip
@click.pass_obj
def up(obj: _Ctx, workers: int | None) -> None:
    """Start the local platform: a Ray cluster and an MLflow server on 127.0.0.1."""
    from shipyard.local import up as platform_up

    began = time.monotonic()
    state = platform_up(obj.settings, workers=workers, progress=_say)
    for name in state.already_running:
        _say(f"{name} is already running (pid {state.components[name].pid})")
    _print_addresses(state.dashboard_url, state.mlflow_url)
    from shipyard.local import metrics_discovery_file

    click.echo(f"Prometheus:     {metrics_discovery_file(obj.settings)}  (file_sd_configs: "
               "every Ray node's metrics, Shipyard's included)")  # fmt: skip
    click.echo(f"state: {obj.settings.run_dir / 'platform.json'}  "
               f"({time.monotonic() - began:.1f}s)")  # fmt: skip


def _print_addresses(dashboard: str | None, mlflow: str | None) -> None:
    click.echo(f"Ray dashboard:  {dashboard}")
    click.echo(f"Ray jobs API:   {dashboard}  (shipyard job submit -- ...)")
    click.echo(f"MLflow UI:      {mlflow}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def status(obj: _Ctx, as_json: bool) -> None:
    """Show each component (up or down, address, version); exit 1 if one is down."""
    from shipyard.local import status as platform_status

    rows = platform_status(obj.settings)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        for r in rows:
            state = "up" if r.up else "DOWN"
            click.echo(f"{r.name:<14} {state:<5} {r.address:<28} {r.version:<10} {r.detail}")
    if not all(r.up for r in rows):
        raise SystemExit(1)


@cli.command()
@click.pass_obj
def down(obj: _Ctx) -> None:
    """Stop exactly what `shipyard up` started."""
    from shipyard.local import down as platform_down

    stopped = platform_down(obj.settings, progress=_say)
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


# -- jobs ---------------------------------------------------------------------


@cli.group()
def job() -> None:
    """Submit and follow Ray jobs (the Job Submission API on the head node)."""


_address = click.option(
    "--address", default=None, help="dashboard URL of the cluster (default: ray.address, or local)"
)


@job.command("submit", context_settings={"ignore_unknown_options": True})
@click.option("--wait", is_flag=True, help="stream the logs and wait for the end")
@click.option("--working-dir", type=click.Path(), default=None,
              help="directory shipped to the cluster as the job's working dir")  # fmt: skip
@click.option("--runtime-env", type=click.Path(), default=None,
              help="YAML/JSON runtime_env file (env_vars, pip, ...)")  # fmt: skip
@click.option("--submission-id", default=None, help="choose the job id")
@click.option("--k8s", is_flag=True,
              help="submit as a KubeRay RayJob on the chart's jobs RayCluster "
                   "(k8s.namespace, k8s.jobs_cluster) instead of through the Job API")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=1), default=None,
              help="with --wait: give up after this many seconds")  # fmt: skip
@_address
@click.argument("entrypoint", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def job_submit(obj: _Ctx, wait: bool, working_dir: str | None, runtime_env: str | None,
               submission_id: str | None, k8s: bool, timeout: float | None,
               address: str | None, entrypoint: tuple[str, ...]) -> None:  # fmt: skip
    """Submit ENTRYPOINT (after --) as a Ray job and print its id."""
    from shipyard import jobs

    env = jobs.load_runtime_env(runtime_env) if runtime_env else None
    if k8s:
        _submit_rayjob(obj.settings, list(entrypoint), env, working_dir, submission_id,
                       wait, timeout, address)  # fmt: skip
        return
    job_id = jobs.submit_job(obj.settings, list(entrypoint), address=address,
                             working_dir=working_dir, runtime_env=env,
                             submission_id=submission_id)  # fmt: skip
    click.echo(job_id)
    if wait:
        _follow_and_wait(obj.settings, job_id, address)


def _submit_rayjob(settings: Settings, entrypoint: list[str], env: dict[str, Any] | None,
                   working_dir: str | None, name: str | None, wait: bool,
                   timeout: float | None, address: str | None) -> None:  # fmt: skip
    from shipyard import rayjobs

    if working_dir:
        raise ConfigError(
            "--working-dir cannot be used with --k8s: a RayJob runs the code in the image",
            hint="drop --k8s to upload a working dir through the Job API, or build it into "
            "the image (deploy/docker/Dockerfile)",
        )
    name = rayjobs.submit(settings, entrypoint, name=name, runtime_env=env)
    click.echo(name)
    if not wait:
        return
    status = rayjobs.wait(settings, name, timeout=timeout, echo=_say)
    if address or settings.ray.address:
        from shipyard import jobs

        click.echo(jobs.job_logs(settings, status.job_id, address=address), nl=False)


def _follow_and_wait(settings: Settings, job_id: str, address: str | None) -> Any:
    from shipyard import jobs

    for chunk in jobs.tail_logs(settings, job_id, address=address):
        click.echo(chunk, nl=False)
    info = jobs.wait_for_job(settings, job_id, address=address)
    click.echo(f"job {job_id} {info.status}")
    return info


@job.command("status")
@click.argument("job_id")
@_address
@click.pass_obj
def job_status(obj: _Ctx, job_id: str, address: str | None) -> None:
    """Show a job's status; exit 1 if it FAILED or was STOPPED."""
    from shipyard import jobs

    info = jobs.job_status(obj.settings, job_id, address=address)
    click.echo(f"{info.job_id}  {info.status}  {info.entrypoint}")
    if info.message:
        click.echo(f"  {info.message.strip().splitlines()[0]}")
    if info.status in ("FAILED", "STOPPED"):
        raise SystemExit(1)


@job.command("logs")
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="keep streaming until the job ends")
@_address
@click.pass_obj
def job_logs(obj: _Ctx, job_id: str, follow: bool, address: str | None) -> None:
    """Print a job's logs."""
    from shipyard import jobs

    if follow:
        for chunk in jobs.tail_logs(obj.settings, job_id, address=address):
            click.echo(chunk, nl=False)
    else:
        click.echo(jobs.job_logs(obj.settings, job_id, address=address), nl=False)


@job.command("list")
@_address
@click.pass_obj
def job_list(obj: _Ctx, address: str | None) -> None:
    """List the cluster's jobs, oldest first."""
    from shipyard import jobs

    for info in jobs.list_jobs(obj.settings, address=address):
        started = (
            datetime.fromtimestamp(info.start_time, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            if info.start_time else "-"
        )  # fmt: skip
        click.echo(f"{info.job_id:<28} {info.status:<10} {started:<20} {info.entrypoint}")


@job.command("stop")
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="wait until it has stopped")
@_address
@click.pass_obj
def job_stop(obj: _Ctx, job_id: str, wait: bool, address: str | None) -> None:
    """Stop a running job."""
    from shipyard import jobs

    if not jobs.stop_job(obj.settings, job_id, address=address):
        info = jobs.job_status(obj.settings, job_id, address=address)
        click.echo(f"job {job_id} was not running ({info.status})")
        return
    if wait:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = jobs.job_status(obj.settings, job_id, address=address)
            if info.terminal:
                click.echo(f"job {job_id} {info.status}")
                return
            time.sleep(0.5)
    click.echo(f"stop requested for {job_id}")


# -- data ---------------------------------------------------------------------


@cli.group()
def data() -> None:
    """Raw data."""


_PASS_THROUGH = {"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]}
_args = click.argument("args", nargs=-1, type=click.UNPROCESSED)
_json = click.option("--json", "as_json", is_flag=True,
                     help="print the result document as JSON")  # fmt: skip


def _workload(obj: _Ctx, name: str, args: tuple[str, ...] | list[str], *, local: bool = True,
              as_json: bool = False) -> None:  # fmt: skip
    """Run ``workload.<name>`` with the arguments as given; print its result."""
    from shipyard import workload

    result = workload.run(obj.settings, name, list(args), local=local, echo=click.echo)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        workload.report(obj.settings, name, list(args), result, click.echo)


@data.command("generate", context_settings=_PASS_THROUGH)
@_args
@click.pass_obj
def data_generate(obj: _Ctx, args: tuple[str, ...]) -> None:
    """Generate raw data with the workload's generator (workload.generate), in this
    process; ARGS go to it. The fraud workload's: --rows N [--seed S] [--out DIR]
    [--start DATE] [--days D] [--fraud-rate R] [--overwrite] (`-- --help` lists them)."""
    _workload(obj, "generate", args)


# -- features -----------------------------------------------------------------


@cli.group()
def features() -> None:
    """The feature pipeline (Ray Data) and the feature store (Feast)."""


_local = click.option("--local", is_flag=True,
                      help="run in this process instead of as a Ray job: inside a Ray job or "
                           "RayJob on its cluster, elsewhere on a private Ray")  # fmt: skip


@features.command("build", context_settings=_PASS_THROUGH)
@_local
@_json
@_args
@click.pass_obj
def features_build(obj: _Ctx, local: bool, as_json: bool, args: tuple[str, ...]) -> None:
    """Build the feature tables: workload.features_build as a Ray job; ARGS go to it.
    The fraud workload's: [--input DIR] [--since T --until T]."""
    _workload(obj, "features_build", args, local=local, as_json=as_json)


@features.command("apply")
@click.pass_obj
def features_apply(obj: _Ctx) -> None:
    """Register the workload's entities, feature views and feature services
    (workload.feature_definitions) in the Feast registry."""
    from shipyard import features as feats

    for name in feats.apply(obj.settings):
        click.echo(f"applied {name}")
    click.echo(f"project {obj.settings.features.project} ({obj.settings.profile} profile)")


@features.command("materialize", context_settings=_PASS_THROUGH)
@_local
@_json
@_args
@click.pass_obj
def features_materialize(obj: _Ctx, local: bool, as_json: bool, args: tuple[str, ...]) -> None:
    """Load the latest feature values into the online store: workload.features_jobs
    `materialize` as a Ray job; ARGS go to it. The fraud workload's: [--end T]."""
    _workload(obj, "features_jobs", ("materialize", *args), local=local, as_json=as_json)


@features.command("get", context_settings=_PASS_THROUGH)
@_json
@_args
@click.pass_obj
def features_get(obj: _Ctx, as_json: bool, args: tuple[str, ...]) -> None:
    """Print online feature values: workload.features_jobs `get`, in this process; ARGS
    go to it. The fraud workload's: --customer ID --merchant ID [--amount A]."""
    _workload(obj, "features_jobs", ("get", *args), as_json=as_json)


@features.command("training-set", context_settings=_PASS_THROUGH)
@_local
@_json
@_args
@click.pass_obj
def features_training_set(obj: _Ctx, local: bool, as_json: bool, args: tuple[str, ...]) -> None:
    """Write a point-in-time correct training set: workload.features_jobs
    `training-set` as a Ray job; ARGS go to it. The fraud workload's: --entities FILE
    --out PATH."""
    _workload(obj, "features_jobs", ("training-set", *args), local=local, as_json=as_json)


# -- training and the model registry ----------------------------------------------


@cli.command(context_settings=_PASS_THROUGH)
@_local
@_json
@_args
@click.pass_obj
def train(obj: _Ctx, local: bool, as_json: bool, args: tuple[str, ...]) -> None:
    """Train, track, register and gate a model: workload.train as a Ray job; ARGS go to
    it. The fraud workload's: [--config FILE] [--workers N] [--epochs E]."""
    _workload(obj, "train", args, local=local, as_json=as_json)


@cli.group()
def models() -> None:
    """Registered models: versions, aliases, metrics, gate verdicts, lineage."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def models_list(obj: _Ctx, as_json: bool) -> None:
    """Every registered version with its aliases, metrics and gate verdict."""
    from shipyard.models import list_models

    versions = list_models(obj.settings)
    if as_json:
        click.echo(json.dumps([v.__dict__ for v in versions], indent=2))
        return
    if not versions:
        click.echo("no registered models yet: run `shipyard train`")
        return
    click.echo(f"{'model':<18} {'ver':>4}  {'aliases':<21} {'PR AUC':>7} {'ROC AUC':>7}  "
               f"{'gate':<7} created")  # fmt: skip
    for v in versions:
        created = datetime.fromtimestamp(v.created / 1000, tz=timezone.utc)
        click.echo(f"{v.name:<18} {v.version:>4}  {','.join(v.aliases) or '-':<21} "
                   f"{_metric(v.metrics, 'final_val_pr_auc'):>7} "
                   f"{_metric(v.metrics, 'final_val_roc_auc'):>7}  "
                   f"{_verdict(v.gate):<7} "
                   f"{created:%Y-%m-%d %H:%M}")  # fmt: skip


def _verdict(gate: dict[str, str]) -> str:
    return {"True": "passed", "False": "refused"}.get(gate.get("passed", ""), "-")


def _metric(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key]:.4f}" if key in metrics else "-"


@models.command("show")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def models_show(obj: _Ctx, ref: str, as_json: bool) -> None:
    """One version: REF is NAME, NAME@ALIAS or NAME/VERSION."""
    from shipyard.models import show

    v = show(obj.settings, ref)
    if as_json:
        click.echo(json.dumps(v.__dict__, indent=2))
        return
    click.echo(f"{v.name} version {v.version}  aliases: {', '.join(v.aliases) or 'none'}")
    click.echo(f"  status        {v.status}; run {v.run_id} ({v.run_status})")
    click.echo(f"  run           {v.run_url}")
    for key in sorted(v.metrics):
        click.echo(f"  {key:<22}{v.metrics[key]:.4f}")
    if v.gate:
        click.echo(f"  gate          {_verdict(v.gate)}: "
                   f"{v.gate.get('reason', '')}")  # fmt: skip
    click.echo("  lineage")
    for key in sorted(v.lineage):
        click.echo(f"    {key:<22}{v.lineage[key]}")


# -- serving and canaries -----------------------------------------------------


@cli.command()
@click.argument("ref")
@click.option(
    "--dry-run", is_flag=True, help="print the Serve config (serve deploy format), change nothing"
)
@click.option("--no-wait", is_flag=True, help="return once the config is accepted")
@click.pass_obj
def deploy(obj: _Ctx, ref: str, dry_run: bool, no_wait: bool) -> None:
    """Serve MODEL[@ALIAS|/VERSION] (default: the latest version) as its model's stable
    version: a new Serve application, or the running one moved in place."""
    import yaml

    from shipyard.serving import deploy as serve_deploy

    result = serve_deploy(obj.settings, ref, wait=not no_wait, dry_run=dry_run, echo=_say)
    if dry_run:
        click.echo(yaml.safe_dump(result["config"], sort_keys=False), nl=False)
        return
    click.echo(f"{result['model']} version {result['version']} ({ref}) -> "
               f"POST {result['route']}/predict")  # fmt: skip


@cli.group()
def serve() -> None:
    """The Serve applications: what runs, where, with which versions and weights."""


@serve.command("status")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def serve_status_cmd(obj: _Ctx, as_json: bool) -> None:
    """Applications, deployments, replicas, versions and canary weights."""
    from shipyard.serving import serve_status

    apps = serve_status(obj.settings)
    if as_json:
        click.echo(json.dumps(apps, indent=2, default=str))
        return
    if not apps:
        click.echo("no Serve applications; deploy one with `shipyard deploy MODEL@champion`")
        return
    for app in apps:
        click.echo(f"{app['application']}  {app['status']}  {app['route']}  "
                   f"{app['message']}".rstrip())  # fmt: skip
        weight = app.get("canary_weight", 0.0)
        if app.get("kind") == "gateway":
            click.echo(
                "  Open Inference Protocol v2 for every model: /v2/models/NAME[/ready|/infer]"
            )
        else:
            click.echo(f"  stable v{app.get('stable_version')}  {100 - weight:g}%   canary "
                       f"{'v' + str(app['canary_version']) if app.get('canary_version') else '-'}"
                       f"  {weight:g}%   rollout: {app.get('rollout') or 'none'}")  # fmt: skip
        for name, dep in app["deployments"].items():
            replicas = "?" if dep.get("replicas") is None else dep["replicas"]
            click.echo(f"  {name:<8} {dep.get('status', ''):<10} replicas running: {replicas}")


@cli.group()
def canary() -> None:
    """Canary rollouts of a new model version, gated on live metrics."""


def _plan_options(fn: Any) -> Any:
    opts = [
        click.option("--steps", default=None, help="canary weights in percent, e.g. 5,25,50,100"),
        click.option("--interval", default=None, help="analysis interval per step, e.g. 30s"),
        click.option("--max-error-rate", type=float, default=None, help="e.g. 0.01"),
        click.option(
            "--max-latency-ratio",
            type=float,
            default=None,
            help="canary p95 over stable p95, e.g. 1.5",
        ),  # fmt: skip
        click.option(
            "--min-requests",
            type=int,
            default=None,
            help="canary requests an interval needs to count",
        ),  # fmt: skip
        click.option(
            "--failure-threshold", type=int, default=None, help="failed checks that roll back"
        ),  # fmt: skip
        click.option(
            "--max-inconclusive",
            type=int,
            default=None,
            help="intervals in a row with too few canary requests before the rollout pauses",
        ),  # fmt: skip
        click.option("--ready-timeout", default=None, help="deadline for the canary to load"),
        click.option(
            "--warmup",
            default=None,
            help="after each weight change, latencies left out of the p95 comparison, e.g. 5s",
        ),  # fmt: skip
        click.option(
            "--shadow",
            type=float,
            default=None,
            help="a shadow phase first: this share (%) of stable's records mirrored to the new "
            "version, whose answers are compared and never reach a client (default 0: none)",
        ),  # fmt: skip
        click.option(
            "--max-disagreement",
            type=float,
            default=None,
            help="shadow: share of records answered on the other side of the decision "
            "threshold that fails a check, e.g. 0.05",
        ),  # fmt: skip
        click.option(
            "--decision-threshold",
            type=float,
            default=None,
            help="shadow: the score at which an answer turns positive, e.g. 0.5",
        ),  # fmt: skip
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _plan(**kw: Any) -> Any:
    from shipyard.canary import parse_plan

    return parse_plan(**kw)


def _print_rollout(state: dict[str, Any], last: int | None = None) -> None:
    serving = state.get("serving") or {}
    click.echo(f"{state.get('app')}: {state.get('status')}"
               + (f"  canary v{state['canary_version']} vs stable v{state.get('stable_version')}"
                  if state.get("canary_version") else ""))  # fmt: skip
    if state.get("plan"):
        plan = state["plan"]
        steps = ",".join(f"{s:g}" for s in plan["steps"])
        if plan.get("shadow"):
            steps = f"shadow {plan['shadow']:g}%," + steps
        if state.get("shadow_weight"):
            click.echo(f"  shadow phase: {state['shadow_weight']:g}% of stable's records "
                       "mirrored; clients get stable's answers")  # fmt: skip
        click.echo(f"  step {state.get('step', -1) + 1}/{len(plan['steps'])} (steps {steps}), "
                   f"weight {state.get('weight', 0):g}%, failed checks "
                   f"{state.get('failed_checks', 0)}/{plan['failure_threshold']}, interval "
                   f"{plan['interval_s']:g}s")  # fmt: skip
    if serving:
        click.echo(f"  serving: stable v{serving['stable_version']}, canary "
                   f"{'v' + str(serving['canary_version']) if serving['canary_version'] else '-'}"
                   f" at {serving['canary_weight']:g}%"
                   + (f", shadow {serving['shadow_weight']:g}%" if serving.get("shadow_weight")
                      else ""))  # fmt: skip
    if (state.get("watch") or {}).get("enabled"):
        click.echo("  registry watch: on (a new gated challenger starts a rollout)")
    decisions = state.get("decisions") or []
    if last is not None:
        decisions = decisions[-last:]
    for d in decisions:
        click.echo(f"  {d['at']}  {d['action']:<13} {d.get('weight', 0):>5g}%  {d['reason']}")


@canary.command("start")
@click.argument("model")
@click.option(
    "--version", "version", required=True, help="version number or alias, e.g. 4 or challenger"
)
@_plan_options
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def canary_start(obj: _Ctx, model: str, version: str, as_json: bool, **plan: Any) -> None:
    """Roll VERSION out to MODEL's application as a canary, step by step."""
    from shipyard.canary import client

    state = client.start(obj.settings, model, version, _plan(**plan), echo=_say)
    if as_json:
        click.echo(json.dumps(state, indent=2, default=str))
    else:
        _print_rollout(state)
        click.echo(f"follow it: shipyard canary status {model} --follow")


@canary.command("status")
@click.argument("model")
@click.option(
    "--follow",
    is_flag=True,
    help="print decisions until the rollout ends or pauses (exit 1: rolled back, 3: paused)",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def canary_status(obj: _Ctx, model: str, follow: bool, as_json: bool) -> None:
    """The rollout's state and every decision with its reason."""
    from shipyard.canary import ACTIVE, client

    state = client.status(obj.settings, model)
    if as_json:
        click.echo(json.dumps(state, indent=2, default=str))
        return
    _print_rollout(state)
    seen = len(state.get("decisions") or [])
    # a paused rollout waits for a person: following it further would never end
    while follow and state.get("status") in ACTIVE and state.get("status") != "paused":
        time.sleep(1.0)
        state = client.status(obj.settings, model)
        for d in (state.get("decisions") or [])[seen:]:
            click.echo(f"  {d['at']}  {d['action']:<13} {d.get('weight', 0):>5g}%  {d['reason']}")
        seen = len(state.get("decisions") or [])
    if follow:
        click.echo(f"{model}: {state.get('status')}")
    if follow and state.get("status") == "paused":
        click.echo(f"it waits for a person: `shipyard canary resume|promote|rollback {model}`",
                   err=True)  # fmt: skip
        raise SystemExit(3)
    if state.get("status") == "rolled_back":
        raise SystemExit(1 if follow else 0)


def _canary_action(action: str, doc: str) -> None:
    @canary.command(action, help=doc)
    @click.argument("model")
    @click.pass_obj
    def _cmd(obj: _Ctx, model: str) -> None:
        from shipyard.canary import client

        state = client.command(obj.settings, model, action, echo=_say)
        _print_rollout(state, last=1)


_canary_action("pause", "Hold the rollout at its current weight.")
_canary_action("resume", "Continue a paused rollout.")
_canary_action("promote", "Skip the remaining steps: move stable to the canary's version now.")
_canary_action("rollback", "Send all traffic back to stable and empty the canary now.")


@canary.command("watch")
@click.argument("model")
@_plan_options
@click.option("--stop", is_flag=True, help="turn the registry watch off")
@click.pass_obj
def canary_watch(obj: _Ctx, model: str, stop: bool, **plan: Any) -> None:
    """Start a rollout whenever the `challenger` alias moves to a version that passed
    the training gate (the controller watches the registry in the cluster)."""
    from shipyard.canary import client

    state = client.watch(obj.settings, model, _plan(**plan), enabled=not stop, echo=_say)
    _print_rollout(state, last=1)


# -- demo ---------------------------------------------------------------------


@cli.command(context_settings=_PASS_THROUGH)
@_args
@click.pass_obj
def demo(obj: _Ctx, args: tuple[str, ...]) -> None:
    """Run the workload's demo (workload.demo) end to end on the local platform, which it
    leaves running; ARGS go to it. The fraud workload's: [--rows N] [--workers N]."""
    _workload(obj, "demo", args)


def _add_groups() -> None:
    from shipyard.cli_monitor import monitor, predict
    from shipyard.cli_schedule import schedule

    cli.add_command(monitor)
    cli.add_command(predict)
    cli.add_command(schedule)


_add_groups()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        code = cli.main(args=args, prog_name="shipyard", standalone_mode=False)
        if isinstance(code, int) and code:  # click returns an Exit's code in this mode
            return code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        _say("aborted")
        return 130
    except ShipyardError as exc:
        if debug:
            traceback.print_exc()
        _say(f"error: {exc.message}")
        if exc.hint:
            _say(f"hint: {exc.hint}")
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except Exception as exc:  # a bug of ours: still one line unless --debug
        if debug:
            traceback.print_exc()
        _say(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for details)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
