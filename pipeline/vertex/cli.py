"""`taxifare compile`, `submit` and `schedule`: the pipeline on Vertex AI Pipelines.

Exit codes: 0 success; 1 the compile or the submission failed; 2 usage or config error
(including missing Google Cloud credentials: nothing was sent).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.cli_args import add_config_args
from taxifare_modules import compat

if TYPE_CHECKING:  # the CLI imports this module at start-up: keep it light
    from pipeline.config import Config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_CONFIG = "configs/vertex.yaml"


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    # The same --config/--set/--verbose as the local commands, with the Vertex config default.
    add_config_args(parser, DEFAULT_CONFIG, "vertex.training.tier=multi-gpu")


def _fail(message: str, code: int) -> int:
    print(f"taxifare: {message}", file=sys.stderr)
    return code


def _load(args: argparse.Namespace) -> Config | None:
    """The config, or None after printing why it cannot be used."""
    from pipeline.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as e:
        _fail(str(e), EXIT_USAGE)
        return None
    if cfg.vertex is None:
        _fail(
            f"{args.config} has no `vertex` section (project, region, pipeline_root, image);"
            f" start from {DEFAULT_CONFIG}",
            EXIT_USAGE,
        )
        return None
    return cfg


def default_output(cfg: Config) -> Path:
    """Where `compile` writes the job spec unless told: build/<name>_pipeline.json."""
    return Path("build") / f"{cfg.name}_pipeline.json"


def _compile(cfg: Config, output: Path) -> int:
    from pipeline.vertex.compiler import compile_pipeline
    from pipeline.vertex.component_config import worker_pool_specs
    from pipeline.vertex.spec_checks import SpecCheckError

    try:
        spec = compile_pipeline(cfg, output)
    except OSError as e:
        return _fail(f"cannot write the pipeline spec to {output}: {e}", EXIT_FAILED)
    except SpecCheckError as e:
        return _fail(f"{e}\nnothing was written to {output}", EXIT_FAILED)
    steps = len(spec["pipelineSpec"]["root"]["dag"]["tasks"])
    pools = worker_pool_specs(cfg.vertex)
    machines = ", ".join(
        f"{p['replica_count']} x {p['machine_spec']['machine_type']}"
        + (
            f" + {p['machine_spec']['accelerator_count']} {p['machine_spec']['accelerator_type']}"
            if p["machine_spec"].get("accelerator_type")
            else ""
        )
        for p in pools
    )
    print(
        f"taxifare: compiled pipeline '{cfg.name}' ({steps} steps) to {output}\n"
        f"  image: {cfg.vertex.image}\n"
        f"  beam: {cfg.vertex.dataflow.runner};"
        f" trainer tier {cfg.vertex.training.tier}: {machines}",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_compile(args: argparse.Namespace) -> int:
    """`taxifare compile`: writes the Vertex AI pipeline job spec (JSON)."""
    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    return _compile(cfg, Path(args.output) if args.output else default_output(cfg))


def _template(cfg: Config, args: argparse.Namespace) -> tuple[Path | None, int]:
    """The compiled spec to send: --template as is, else the config compiled to --output."""
    if args.template:
        template = Path(args.template)
        if not template.is_file():
            return None, _fail(f"compiled pipeline not found: {template}", EXIT_USAGE)
        return template, EXIT_OK
    template = Path(args.output) if args.output else default_output(cfg)
    code = _compile(cfg, template)
    return (template if code == EXIT_OK else None), code


def _check_tags(job: dict, args: argparse.Namespace, command: str) -> int:
    """EXIT_OK unless the spec runs an image by tag and --allow-tag was not given (a dry
    run only warns)."""
    from pipeline.vertex import submit

    tags = submit.mutable_images(job)
    if tags and not args.allow_tag:
        note = f"the pipeline's image is a mutable tag ({', '.join(tags)}): " + submit.DIGEST_HELP
        if not args.dry_run:
            return _fail(note, EXIT_USAGE)
        print(f"taxifare: warning: a real {command} refuses this: {note}", file=sys.stderr)
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    """`taxifare submit`: compiles, builds the PipelineJob and submits it (or prints it)."""
    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    template, code = _template(cfg, args)
    if template is None:
        return code

    from pipeline.vertex import submit

    with open(template) as fh:  # a local file: compiled here or given by --template
        code = _check_tags(json.load(fh), args, "submit")
    if code != EXIT_OK:
        return code

    if args.dry_run:
        from google.auth.credentials import AnonymousCredentials

        # No request is sent: anonymous credentials let aiplatform build its client offline.
        job = submit.build_pipeline_job(cfg, template, AnonymousCredentials())
        request = submit.create_request(job, cfg.vertex.service_account, cfg.vertex.network)
        print(
            f"taxifare: dry run, nothing sent. The request: POST {submit.request_url(job)}",
            file=sys.stderr,
        )
        print(json.dumps(request, indent=2, sort_keys=True))
        return EXIT_OK

    try:
        credentials = submit.find_credentials()
    except submit.MissingCredentialsError as e:
        return _fail(str(e), EXIT_USAGE)
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    job = submit.build_pipeline_job(cfg, template, credentials)
    try:
        job.submit(service_account=cfg.vertex.service_account, network=cfg.vertex.network)
    except (GoogleAPIError, GoogleAuthError) as e:
        return _fail(f"Vertex AI did not accept the pipeline job: {e}", EXIT_FAILED)
    dashboard = compat.pipeline_job_dashboard_uri(job)
    print(
        f"taxifare: submitted {job.resource_name}\n  watch: {dashboard}",
        file=sys.stderr,
    )
    if not args.wait:
        return EXIT_OK
    try:
        job.wait()
    except RuntimeError as e:  # aiplatform raises it when the job ends failed or cancelled
        return _fail(f"the pipeline job did not succeed: {e}", EXIT_FAILED)
    print(f"taxifare: pipeline job {job.resource_name} succeeded", file=sys.stderr)
    return EXIT_OK


def cmd_schedule(args: argparse.Namespace) -> int:
    """`taxifare schedule`: compiles and creates a Vertex pipeline schedule (or prints it)."""
    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    if cfg.vertex.schedule.cron is None:
        return _fail(
            "vertex.schedule.cron is not set: give the schedule's times as five cron fields,"
            " e.g. --set 'vertex.schedule.cron=0 6 1 * *' (06:00 UTC on the 1st of each month)",
            EXIT_USAGE,
        )
    template, code = _template(cfg, args)
    if template is None:
        return code

    from pipeline.vertex import schedule, submit

    with open(template) as fh:  # a local file: compiled here or given by --template
        spec = json.load(fh)
    problem = schedule.schedule_problem(cfg, spec)
    if problem:
        return _fail(f"cannot schedule {template}: {problem}", EXIT_USAGE)
    code = _check_tags(spec, args, "schedule")
    if code != EXIT_OK:
        return code

    if args.dry_run:
        from google.auth.credentials import AnonymousCredentials

        # No request is sent: anonymous credentials let aiplatform build the job offline.
        job = submit.build_pipeline_job(cfg, template, AnonymousCredentials())
        request = schedule.build_request(cfg, job)
        print(
            f"taxifare: dry run, nothing sent. The request: POST {schedule.request_url(cfg)}",
            file=sys.stderr,
        )
        print(json.dumps(schedule.request_json(request), indent=2, sort_keys=True))
        return EXIT_OK

    try:
        credentials = submit.find_credentials()
    except submit.MissingCredentialsError as e:
        return _fail(str(e).replace("taxifare submit", "taxifare schedule"), EXIT_USAGE)
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    job = submit.build_pipeline_job(cfg, template, credentials)
    try:
        created = schedule.create(cfg, schedule.build_request(cfg, job), credentials)
    except (GoogleAPIError, GoogleAuthError) as e:
        return _fail(f"Vertex AI did not accept the schedule: {e}", EXIT_FAILED)
    print(
        f"taxifare: created schedule {created.name} ({created.cron})\n"
        f"  next run: {created.next_run_time}\n"
        f"  watch: {schedule.console_url(cfg, created.name)}",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_rehearse(args: argparse.Namespace) -> int:
    """`taxifare rehearse`: the compiled spec, task by task, on this machine."""
    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    if args.runs < 1:
        return _fail(f"--runs must be at least 1, not {args.runs}", EXIT_USAGE)
    if args.parallel < 1:
        return _fail(f"--parallel must be at least 1, not {args.parallel}", EXIT_USAGE)
    from pipeline.vertex.rehearse import RehearsalError, rehearse
    from pipeline.vertex.spec_checks import SpecCheckError

    try:
        ok = rehearse(cfg, Path(args.root), runs=args.runs, parallel=args.parallel)
    except (SpecCheckError, RehearsalError) as e:
        return _fail(str(e), EXIT_FAILED)
    return EXIT_OK if ok else EXIT_FAILED


def cmd_check_image(args: argparse.Namespace) -> int:
    """`taxifare check-image`: this environment can run every step of the compiled specs."""
    import json

    from pipeline.config import ConfigError, load_config

    jobs = {}
    try:
        for path in args.spec or []:
            with open(path) as fh:  # a local file given on the command line
                jobs[path] = json.load(fh)
        lock_text = Path(args.lock).read_text()
    except (OSError, json.JSONDecodeError) as e:
        return _fail(f"check-image: cannot read {e.filename or 'a spec'}: {e}", EXIT_USAGE)
    if args.config:
        import tempfile

        from pipeline.vertex.compiler import compile_pipeline
        from pipeline.vertex.spec_checks import SpecCheckError

        with tempfile.TemporaryDirectory() as folder:
            for path in args.config:
                try:
                    cfg = load_config(path, args.overrides)
                    jobs[path] = compile_pipeline(cfg, Path(folder) / "spec.json")
                except (ConfigError, SpecCheckError) as e:
                    return _fail(f"check-image: {path}: {e}", EXIT_FAILED)
    if not jobs:
        return _fail("check-image: give at least one --config or --spec", EXIT_USAGE)
    from pipeline.vertex.image_check import check_image

    problems = check_image(jobs, lock_text, args.schema)
    if problems:
        return _fail(
            "check-image: this environment cannot run the pipeline:\n"
            + "\n".join(f"  - {p}" for p in problems),
            EXIT_FAILED,
        )
    print(
        f"taxifare: check-image: {len(jobs)} spec(s) runnable here ({', '.join(jobs)}); the"
        f" lock's versions installed ({args.lock}); tf.keras is Keras 2",
        file=sys.stderr,
    )
    return EXIT_OK


def _add_job_args(parser: argparse.ArgumentParser, verb: str, what: str) -> None:
    """The arguments `submit` and `schedule` share: the config, the spec, --dry-run and
    --allow-tag."""
    _add_config_args(parser)
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--output", help="where to write the compiled spec (default: build/<name>_pipeline.json)"
    )
    source.add_argument(
        "--template", help=f"{verb} this compiled spec as is instead of compiling the config"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"build the {what} and print the request it would send; send nothing",
    )
    parser.add_argument(
        "--allow-tag",
        action="store_true",
        help=f"{verb} even though vertex.image is a tag, not a digest (@sha256:...)",
    )


def add_vertex_parsers(
    subparsers: argparse._SubParsersAction,
) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Registers the Vertex commands (`compile`, `submit`, `schedule`, ...) on the CLI's
    subparsers.

    Returns:
      The command functions by subcommand name, for the CLI's dispatch table.
    """
    compile_parser = subparsers.add_parser(
        "compile", help="compile the pipeline into a Vertex AI Pipelines job spec (JSON)"
    )
    _add_config_args(compile_parser)
    compile_parser.add_argument(
        "--output", help="the JSON file to write (default: build/<name>_pipeline.json)"
    )

    submit_parser = subparsers.add_parser(
        "submit", help="compile and submit the pipeline to Vertex AI Pipelines"
    )
    _add_job_args(submit_parser, "submit", "job")
    submit_parser.add_argument(
        "--wait", action="store_true", help="wait until the pipeline job ends"
    )
    schedule_parser = subparsers.add_parser(
        "schedule",
        help="compile the pipeline and create a Vertex AI pipeline schedule (vertex.schedule)",
    )
    _add_job_args(schedule_parser, "schedule", "schedule")
    rehearse_parser = subparsers.add_parser(
        "rehearse",
        help="compile the Vertex pipeline and run every task of the spec on this machine",
    )
    _add_config_args(rehearse_parser)
    rehearse_parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="pipeline runs, one after another (default 3: a first span, a new span, the same"
        " data again)",
    )
    rehearse_parser.add_argument(
        "--parallel",
        type=int,
        default=2,
        help="tasks run at the same time once their inputs are ready (default 2)",
    )
    rehearse_parser.add_argument(
        "--root",
        default="build/rehearsal",
        help="the rehearsal's folder: artifacts, ML Metadata, logs (default build/rehearsal)",
    )
    check_parser = subparsers.add_parser(
        "check-image",
        help="check that this environment (the pipeline image) can run every step of the"
        " compiled Vertex pipeline: imports, locked versions, Keras 2, the schema",
    )
    check_parser.add_argument(
        "--config",
        action="append",
        help="compile this config and check its spec (repeatable)",
    )
    check_parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable)",
    )
    check_parser.add_argument(
        "--spec", action="append", help="check this compiled spec (JSON; repeatable)"
    )
    check_parser.add_argument(
        "--lock", default="requirements.lock", help="the lock to compare versions with"
    )
    check_parser.add_argument(
        "--schema",
        help="read this schema instead of the path the spec names (outside the image)",
    )
    return {
        "compile": cmd_compile,
        "submit": cmd_submit,
        "schedule": cmd_schedule,
        "rehearse": cmd_rehearse,
        "check-image": cmd_check_image,
    }
