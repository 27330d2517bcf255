"""The ``ryla-gen`` command line: generate images, inspect workflows, check a provider.

Commands::

    ryla-gen generate WORKFLOW --prompt TEXT [--lora NAME:STRENGTH[:TRIGGER]]... [--face PATH]
                     [--pose PATH] [--seed N] [--size WxH] [--steps N] [--set FIELD=VALUE]...
                     [--out DIR] [--json] [--dry-run] [--timeout S]
    ryla-gen graph WORKFLOW ... [-o FILE]         API-format JSON, loadable in ComfyUI
    ryla-gen run GRAPH.json [--image NAME=PATH]... [--out DIR] [--json] [--timeout S]
    ryla-gen workflows [list] | workflows show NAME [--json]
    ryla-gen models [--workflow NAME] [--missing] [--json]
    ryla-gen loras list | upload PATH [--name NAME] | delete NAME
    ryla-gen jobs status ID | jobs cancel ID
    ryla-gen serve ...                            python -m ryla_gen_modal serve ...
    ryla-gen comfyui install | start | stop | status [--home DIR] [--port 8188]
    ryla-gen doctor [--json] [--no-run]

The provider comes from the ``RYLA_GEN_*`` environment (see :class:`ryla_gen.Settings`);
``--provider`` and ``--comfyui-url`` override it. With nothing configured, the local
ComfyUI at http://127.0.0.1:8188 is used (start one with ``ryla-gen comfyui start``).

Errors print one paragraph that says what to do; ``--debug`` adds the traceback.

Exit codes:

==  ==========================================================================
0   success
1   the job failed or was cancelled (or an unexpected internal error)
2   usage or input error: bad flag, invalid parameter or graph, missing model
3   configuration error: a RYLA_GEN_* variable is missing or malformed
4   the provider is unreachable, refused the credentials, or answered badly
5   timeout: the job did not finish in time (the remote job was cancelled)
130 interrupted (Ctrl-C); a running job is cancelled first
==  ==========================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ryla_gen._settings import PROVIDERS, Settings
from ryla_gen._version import __version__
from ryla_gen.errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    InputError,
    JobError,
    JobTimeoutError,
    ModelMissingError,
    NotFoundError,
    ProviderUnavailableError,
    RylaGenError,
)

if TYPE_CHECKING:
    from ryla_gen._client import AsyncClient
    from ryla_gen.models import ModelFile
    from ryla_gen.types import GenerationResult, JobEvent
    from ryla_gen.workflows import Workflow

__all__ = [
    "EXIT_CONFIG",
    "EXIT_INTERRUPTED",
    "EXIT_JOB",
    "EXIT_OK",
    "EXIT_PROVIDER",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "CLIError",
    "build_parser",
    "main",
]

_T = TypeVar("_T")

EXIT_OK = 0
EXIT_JOB = 1
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_PROVIDER = 4
EXIT_TIMEOUT = 5
EXIT_INTERRUPTED = 130

EPILOG = """\
exit codes:
  0    success
  1    the job failed or was cancelled
  2    usage or input error (bad flag, invalid parameter or graph, missing model)
  3    configuration error (a RYLA_GEN_* variable is missing or malformed)
  4    provider unreachable, credentials refused, or a bad answer
  5    timeout (the remote job was cancelled)
  130  interrupted (Ctrl-C)

configuration: RYLA_GEN_PROVIDER=comfyui|modal|runpod (default comfyui at
RYLA_GEN_COMFYUI_URL, default http://127.0.0.1:8188); modal needs RYLA_GEN_MODAL_URL
and RYLA_GEN_MODAL_TOKEN; runpod needs RYLA_GEN_RUNPOD_ENDPOINT_ID and
RYLA_GEN_RUNPOD_API_KEY. `ryla-gen doctor` checks the whole setup.
"""

_INSTANTID_NODES = (
    "ApplyInstantID",
    "ApplyInstantIDAdvanced",
    "InstantIDFaceAnalysis",
    "InstantIDModelLoader",
)
_FACE_FIELDS = ("face_image", "face")
_POSE_FIELDS = ("pose_image", "pose")
_PID_FILE = "comfyui.pid"


# ---------------------------------------------------------------------------- errors


class CLIError(Exception):
    """An error the CLI reports as one paragraph and turns into ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors raise :class:`CLIError` instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise CLIError(f"{self.prog}: {message}. See `{self.prog} --help`.", EXIT_USAGE)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, CLIError):
        return exc.code
    if isinstance(exc, ConfigurationError):
        return EXIT_CONFIG
    if isinstance(exc, JobTimeoutError):
        return EXIT_TIMEOUT
    if isinstance(exc, JobError):
        return EXIT_JOB
    if isinstance(exc, InputError):
        return EXIT_USAGE
    if isinstance(exc, APIError):
        # The provider answered and rejected what we sent (e.g. a malformed LoRA file).
        if exc.status_code in (400, 413, 422) and not isinstance(exc, AuthenticationError):
            return EXIT_USAGE
        return EXIT_PROVIDER
    return EXIT_JOB


def _error_type(exc: BaseException) -> str:
    return "usage_error" if isinstance(exc, CLIError) else type(exc).__name__


def _message(exc: BaseException, settings: Settings | None) -> str:
    """The error's own message plus the fix, where the CLI knows a better one."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, ProviderUnavailableError) and (
        settings is None or settings.provider == "comfyui"
    ):
        url = settings.comfyui_url if settings is not None else "http://127.0.0.1:8188"
        text += (
            f" No ComfyUI answers at {url}: start the local one with `ryla-gen comfyui start`, "
            "set RYLA_GEN_COMFYUI_URL to yours, or use RYLA_GEN_PROVIDER=modal|runpod "
            "(`ryla-gen doctor` checks the setup)."
        )
    elif isinstance(exc, AuthenticationError):
        text += (
            " Check RYLA_GEN_MODAL_TOKEN (modal) or RYLA_GEN_RUNPOD_API_KEY (runpod)."
            if "RYLA_GEN_" not in text
            else ""
        )
    elif isinstance(exc, ModelMissingError):
        text += " `ryla-gen models --missing` lists what the provider lacks."
    return text


# ---------------------------------------------------------------------------- context


@dataclass
class _Ctx:
    """What every command handler gets: parsed args, consoles, settings overrides."""

    args: argparse.Namespace
    out: Console
    err: Console
    settings: Settings | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    def load_settings(self) -> Settings:
        """Settings from the environment with ``--provider`` / ``--comfyui-url`` on top."""
        if self.settings is None:
            self.settings = Settings.load(**self.overrides)
        return self.settings

    def client(self) -> AsyncClient:
        """An AsyncClient for the configured provider (call inside the running loop)."""
        from ryla_gen._client import AsyncClient

        return AsyncClient(settings=self.load_settings())

    def emit_json(self, data: Any) -> None:
        """Write one JSON document to stdout (never wrapped or coloured)."""
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def note(self, text: str, style: str | None = None) -> None:
        """A human line on stderr (silent with ``--json``)."""
        if not self.json:
            self.err.print(Text(text, style=style or ""), soft_wrap=True)


# ---------------------------------------------------------------------------- arg types


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        w, h = int(parts[0]), int(parts[1])
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 1024x768, got {text!r}"
        ) from None
    return w, h


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def _lora(text: str) -> dict[str, Any]:
    """``NAME[:STRENGTH[:TRIGGER]]`` -> LoRA fields (validated later by the workflow)."""
    name, _, rest = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(
            f"expected NAME:STRENGTH[:TRIGGER] such as me.safetensors:0.8:ohwx, got {text!r}"
        )
    out: dict[str, Any] = {"name": name}
    if rest:
        strength, _, trigger = rest.partition(":")
        if strength:
            try:
                out["strength"] = float(strength)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"the strength in {text!r} must be a number such as 0.8, got {strength!r}"
                ) from None
        if trigger:
            out["trigger"] = trigger
    return out


def _assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE such as cfg=4.5, got {text!r}")
    return key.strip(), value


def _set_value(text: str) -> Any:
    """A ``--set`` value: JSON lists/objects/null are parsed, everything else stays text.

    pydantic turns text into numbers and booleans where the field wants one.
    """
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if value is None or isinstance(value, list | dict) else text


# ---------------------------------------------------------------------------- parser


def _add_common(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: a value given before the command is not reset by the subcommand's parser.
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
    )
    p.add_argument(
        "--provider",
        choices=PROVIDERS,
        default=argparse.SUPPRESS,
        help="override RYLA_GEN_PROVIDER",
    )
    p.add_argument(
        "--comfyui-url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="override RYLA_GEN_COMFYUI_URL",
    )


def _add_workflow_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "workflow", metavar="WORKFLOW", help="flux-dev, flux-schnell, z-image-turbo, ..."
    )
    p.add_argument(
        "--prompt",
        action="append",
        metavar="TEXT",
        help="the prompt (repeat it for character-sheet: one per view)",
    )
    p.add_argument(
        "--lora",
        action="append",
        type=_lora,
        default=[],
        metavar="NAME:STRENGTH[:TRIGGER]",
        help="a LoRA from models/loras, e.g. me.safetensors:0.9:ohwx (repeatable)",
    )
    p.add_argument("--face", type=Path, metavar="PATH", help="face reference image (InstantID)")
    p.add_argument("--pose", type=Path, metavar="PATH", help="pose reference image (InstantID)")
    p.add_argument("--seed", type=int, metavar="N", help="noise seed (default: random)")
    p.add_argument("--size", type=_size, metavar="WxH", help="image size, e.g. 1024x768")
    p.add_argument("--steps", type=int, metavar="N", help="sampling steps")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        type=_assignment,
        default=[],
        metavar="FIELD=VALUE",
        help="any other parameter (JSON for lists), e.g. --set cfg=4.5 (repeatable)",
    )


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", type=Path, default=Path("out"), metavar="DIR", help="where to save images (./out)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="seconds the whole job may take (default RYLA_GEN_TIMEOUT, 600)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ryla-gen`` (exposed for documentation tools)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="ryla-gen",
        description="Generate images with typed ComfyUI workflows on ComfyUI, Modal or RunPod.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"ryla-gen {__version__}")
    _add_common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, **kw: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(
            name, help=help_text, description=help_text, epilog=EPILOG, formatter_class=fmt, **kw
        )
        _add_common(p)
        return p

    p = command("generate", "build a workflow, run it, save the images")
    _add_workflow_args(p)
    _add_run_args(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the validated graph and its models; send nothing",
    )
    p.set_defaults(handler=_cmd_generate)

    p = command("graph", "print a workflow's API-format graph (loadable in ComfyUI)")
    _add_workflow_args(p)
    p.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help="write to FILE instead of stdout"
    )
    p.set_defaults(handler=_cmd_graph)

    p = command("run", "run an API-format graph JSON file (ComfyUI 'Save (API)')")
    p.add_argument("graph", metavar="GRAPH.json", help="the graph file, or - for stdin")
    p.add_argument(
        "--image",
        dest="images",
        action="append",
        type=_assignment,
        default=[],
        metavar="NAME=PATH",
        help="upload PATH as NAME for the graph's LoadImage nodes (repeatable)",
    )
    _add_run_args(p)
    p.set_defaults(handler=_cmd_run)

    p = command("workflows", "list the workflows, or show one's parameters")
    p.set_defaults(handler=_cmd_workflows_list, json=False)
    wsub = p.add_subparsers(dest="workflows_command", metavar="{list,show}")
    q = wsub.add_parser("list", help="table of workflows", formatter_class=fmt)
    _add_common(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=_cmd_workflows_list)
    q = wsub.add_parser("show", help="every parameter of one workflow", formatter_class=fmt)
    _add_common(q)
    q.add_argument("name", metavar="NAME")
    q.add_argument("--json", action="store_true", help="print the JSON schema")
    q.set_defaults(handler=_cmd_workflows_show)

    p = command("models", "which model files the provider has, against the manifest")
    p.add_argument("--workflow", metavar="NAME", help="only the files this workflow needs")
    p.add_argument("--missing", action="store_true", help="only the files that are missing")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_models)

    p = command("loras", "list, upload or delete LoRA files (modal provider)")
    lsub = p.add_subparsers(dest="loras_command", metavar="{list,upload,delete}", required=True)
    q = lsub.add_parser("list", help="LoRA files the provider has")
    _add_common(q)
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=_cmd_loras_list)
    q = lsub.add_parser("upload", help="upload a .safetensors LoRA")
    _add_common(q)
    q.add_argument("path", type=Path, metavar="PATH")
    q.add_argument("--name", help="file name on the server (default: PATH's name)")
    q.set_defaults(handler=_cmd_loras_upload)
    q = lsub.add_parser("delete", help="delete a LoRA by name")
    _add_common(q)
    q.add_argument("name", metavar="NAME")
    q.set_defaults(handler=_cmd_loras_delete)

    p = command("jobs", "look at or cancel a job by id")
    jsub = p.add_subparsers(dest="jobs_command", metavar="{status,cancel}", required=True)
    q = jsub.add_parser("status", help="a job's state")
    _add_common(q)
    q.add_argument("job_id", metavar="ID")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=_cmd_jobs_status)
    q = jsub.add_parser("cancel", help="cancel a queued or running job")
    _add_common(q)
    q.add_argument("job_id", metavar="ID")
    q.set_defaults(handler=_cmd_jobs_cancel)

    p = sub.add_parser(
        "serve",
        help="run the ryla-gen job API locally (python -m ryla_gen_modal serve ...)",
        add_help=False,
        prefix_chars="\0",  # pass every argument, --help included, to ryla_gen_modal
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(handler=_cmd_serve)

    p = command("comfyui", "install, start, stop or check the local CPU ComfyUI")
    csub = p.add_subparsers(
        dest="comfyui_command", metavar="{install,start,stop,status}", required=True
    )
    for name, help_text, handler in (
        (
            "install",
            "install ComfyUI 0.3.75 (idempotent; minutes the first time)",
            _cmd_comfyui_install,
        ),
        ("start", "start it in the background and wait until it answers", _cmd_comfyui_start),
        ("stop", "stop the one started by `start`", _cmd_comfyui_stop),
        ("status", "is it running? (exit 4 when not)", _cmd_comfyui_status),
    ):
        q = csub.add_parser(name, help=help_text, description=help_text, formatter_class=fmt)
        _add_common(q)
        q.add_argument(
            "--home",
            type=Path,
            metavar="DIR",
            help="install root (default $RYLA_GEN_COMFYUI_HOME or ~/.cache/ryla-gen/comfyui)",
        )
        if name != "install":
            q.add_argument(
                "--base-dir",
                type=Path,
                metavar="DIR",
                help="models/, input/, output/, log and pid file (default: the home)",
            )
        if name in ("start", "status"):
            q.add_argument("--port", type=int, default=8188, help="TCP port on 127.0.0.1 (8188)")
        if name == "start":
            q.add_argument(
                "--timeout",
                type=_positive_float,
                default=240.0,
                metavar="S",
                help="start-up limit (240 s)",
            )
        if name == "status":
            q.add_argument("--json", action="store_true", help="print JSON")
        q.set_defaults(handler=handler)

    p = command("doctor", "check the configured provider end to end")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-run", action="store_true", help="skip running the tiny test graph")
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=120.0,
        metavar="S",
        help="limit for the test graph (120 s)",
    )
    p.set_defaults(handler=_cmd_doctor)
    return parser


# ---------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    out = _console(stderr=False)
    err = _console(stderr=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    ctx: _Ctx | None = None
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:  # --help / --version
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        debug = bool(getattr(args, "debug", False))
        overrides = {
            "provider": getattr(args, "provider", None),
            "comfyui_url": getattr(args, "comfyui_url", None),
        }
        ctx = _Ctx(args=args, out=out, err=err, overrides=overrides)
        handler: Callable[[_Ctx], int] = args.handler
        return handler(ctx)
    except KeyboardInterrupt:
        err.print("Interrupted.", style="yellow")
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # a command that ran another program's main()
        return (
            exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_JOB)
        )
    except (RylaGenError, CLIError) as exc:
        return _report(exc, ctx, err, debug)
    except Exception as exc:  # the last line of defence: no raw traceback
        code = _report(exc, ctx, err, debug, unexpected=True)
        return code


def _console(*, stderr: bool) -> Console:
    """A rich console; off a terminal (pipes, CI logs) tables get 120 columns, not 80."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=120)
    return console


def _report(
    exc: BaseException, ctx: _Ctx | None, err: Console, debug: bool, *, unexpected: bool = False
) -> int:
    code = EXIT_JOB if unexpected else _exit_code(exc)
    settings = ctx.settings if ctx is not None else None
    text = _message(exc, settings)
    if unexpected:
        text = (
            f"Unexpected error ({type(exc).__name__}): {text}. This is probably a bug in "
            "ryla-gen; rerun with --debug for the traceback and report it."
        )
    if debug:
        err.print(
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            markup=False,
            soft_wrap=True,
        )
    label = {
        EXIT_USAGE: "Error",
        EXIT_CONFIG: "Configuration error",
        EXIT_PROVIDER: "Provider error",
        EXIT_TIMEOUT: "Timeout",
        EXIT_JOB: "Job failed" if isinstance(exc, JobError) else "Error",
    }.get(code, "Error")
    err.print(Text.assemble((f"{label}: ", "bold red"), text), soft_wrap=True)
    if ctx is not None and ctx.json:
        error: dict[str, Any] = {"type": _error_type(exc), "message": text, "exit_code": code}
        variable = getattr(exc, "variable", None)
        if variable:
            error["variable"] = variable
        job_id = getattr(exc, "job_id", None)
        if job_id:
            error["job_id"] = job_id
        ctx.emit_json({"ok": False, "error": error})
    return code


def _run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run`` for the CLI's coroutines."""
    return asyncio.run(coro)


# ---------------------------------------------------------------------------- workflows


def _workflow_class(name: str) -> type[Workflow]:
    from ryla_gen.workflows import get_workflow

    try:
        return get_workflow(name)
    except ValueError as exc:
        raise CLIError(f"{exc} `ryla-gen workflows` lists them.", EXIT_USAGE) from None


def _flag_for(field_name: str, face: str | None, pose: str | None) -> str:
    flags = {
        "prompt": "--prompt",
        "views": "--prompt",
        "loras": "--lora",
        "seed": "--seed",
        "steps": "--steps",
        "width": "--size",
        "height": "--size",
    }
    if field_name == face:
        return "--face"
    if field_name == pose:
        return "--pose"
    return flags.get(field_name, f"--set {field_name}=...")


def _validation_message(name: str, exc: Any, face: str | None, pose: str | None) -> str:
    parts = []
    for e in exc.errors():
        loc = [str(x) for x in e.get("loc", ())]
        where = ".".join(loc) or "parameters"
        msg = str(e.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        flag = _flag_for(loc[0], face, pose) if loc else ""
        if loc and msg.startswith(loc[-1]):  # the message names the field already
            head = ".".join(loc[:-1])
            text = f"{head}: {msg}" if head else msg
            if msg.startswith(f"{loc[-1]}: "):
                text = f"{where}: {msg[len(loc[-1]) + 2 :]}"
        else:
            text = f"{where}: {msg}"
        parts.append(text + (f" ({flag})" if flag else ""))
    return (
        f"Invalid {name} parameters: " + "; ".join(parts) + f". `ryla-gen workflows show {name}` "
        "lists every parameter with its range."
    )


def _first_field(fields: Mapping[str, Any], candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in fields), None)


def _build_workflow(args: argparse.Namespace) -> Workflow:
    """The workflow model from the generate/graph flags, validated."""
    from pydantic import ValidationError

    cls = _workflow_class(args.workflow)
    name = cls.name
    fields = cls.model_fields
    face = _first_field(fields, _FACE_FIELDS)
    pose = _first_field(fields, _POSE_FIELDS)
    params = ", ".join(fields)
    data: dict[str, Any] = {}

    def put(field_name: str | None, value: Any, flag: str) -> None:
        if field_name is None or field_name not in fields:
            raise CLIError(
                f"{flag} does not apply to {name} (it has no {field_name or flag[2:]!r} "
                f"parameter). Its parameters: {params}.",
                EXIT_USAGE,
            )
        data[field_name] = value

    prompts: list[str] = list(args.prompt or [])
    if prompts:
        if "prompt" in fields:
            if len(prompts) > 1:
                raise CLIError(f"{name} takes one --prompt, got {len(prompts)}.", EXIT_USAGE)
            data["prompt"] = prompts[0]
        elif "views" in fields:
            data["views"] = prompts
        else:
            put("prompt", prompts[0], "--prompt")
    if args.lora:
        put("loras", list(args.lora), "--lora")
    if args.face is not None:
        put(face, args.face, "--face")
    if args.pose is not None:
        put(pose, args.pose, "--pose")
    if args.seed is not None:
        put("seed", args.seed, "--seed")
    if args.size is not None:
        put("width", args.size[0], "--size")
        put("height", args.size[1], "--size")
    if args.steps is not None:
        put("steps", args.steps, "--steps")
    for key, raw in args.sets:
        if key not in fields:
            raise CLIError(
                f"--set {key}=...: {name} has no parameter {key!r}. Its parameters: {params}.",
                EXIT_USAGE,
            )
        data[key] = _set_value(raw)
    for required in ("prompt", "views"):
        if required in fields and fields[required].is_required() and required not in data:
            raise CLIError(
                f"{name} needs --prompt TEXT"
                + (" (once per view)." if required == "views" else "."),
                EXIT_USAGE,
            )
    for image_field, flag in ((face, "--face"), (pose, "--pose")):
        if image_field and fields[image_field].is_required() and image_field not in data:
            raise CLIError(f"{name} needs {flag} PATH (a photo of the face).", EXIT_USAGE)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise CLIError(_validation_message(name, exc, face, pose), EXIT_USAGE) from None


def _model_dict(m: ModelFile, present: bool | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "folder": m.folder,
        "filename": m.filename,
        "relpath": m.relpath,
        "size": m.size,
        "repo_id": m.repo_id,
        "url": m.url,
        "gated": m.gated,
    }
    if present is not None:
        d["present"] = present
    return d


def _human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover


def _validated_graph(wf: Workflow) -> dict[str, Any]:
    """The workflow's API graph, checked against the bundled node schemas."""
    graph = wf.to_graph()
    graph.validate()
    return graph.to_api()


# ---------------------------------------------------------------------------- generate / run


def _cmd_generate(ctx: _Ctx) -> int:
    args = ctx.args
    wf = _build_workflow(args)
    api = _validated_graph(wf)
    if args.dry_run:
        models = wf.required_models()
        images = sorted(wf.input_images())
        seed = getattr(wf, "seed", None)
        if ctx.json:
            ctx.emit_json(
                {
                    "ok": True,
                    "dry_run": True,
                    "workflow": wf.name,
                    "seed": seed,
                    "graph": api,
                    "models": [_model_dict(m) for m in models],
                    "input_images": images,
                }
            )
            return EXIT_OK
        from ryla_gen.models import total_size

        ctx.out.print(
            f"[bold]{wf.name}[/bold]: graph of {len(api)} nodes, valid against the bundled "
            f"ComfyUI node schemas (seed {seed}). Nothing was sent (--dry-run).",
            soft_wrap=True,
        )
        sys.stdout.write(json.dumps(api, indent=2) + "\n")
        sys.stdout.flush()
        table = Table(
            title=f"Model files it needs ({_human_size(total_size(models))})", title_justify="left"
        )
        table.add_column("file (under ComfyUI/models)")
        table.add_column("size", justify="right")
        table.add_column("source")
        for m in models:
            source = (m.repo_id or "not in the manifest: put it on the server yourself") + (
                " (gated)" if m.gated else ""
            )
            table.add_row(escape(m.relpath), _human_size(m.size), escape(source))
        ctx.out.print(table)
        if images:
            ctx.out.print("Input images it uploads: " + ", ".join(images))
        return EXIT_OK
    return _execute(ctx, wf, name=wf.name, images=None)


def _load_graph_file(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CLIError(
            f"Cannot read the graph file {path}: {exc.strerror or exc}.", EXIT_USAGE
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CLIError(f"{path} is not JSON: {exc}.", EXIT_USAGE) from None
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]  # a POST /prompt body
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise CLIError(
            f"{path} is a ComfyUI UI workflow, not the API format: in ComfyUI use "
            "Workflow > Export (API) (or `ryla-gen graph WORKFLOW -o FILE`).",
            EXIT_USAGE,
        )
    if not isinstance(data, dict) or not data:
        raise CLIError(
            f"{path} does not hold an API-format graph (an object of node id -> "
            '{"class_type": ..., "inputs": ...}).',
            EXIT_USAGE,
        )
    return data


def _cmd_run(ctx: _Ctx) -> int:
    args = ctx.args
    graph = _load_graph_file(args.graph)
    images: dict[str, bytes] = {}
    for name, path in args.images:
        try:
            images[name] = Path(path).expanduser().read_bytes()
        except OSError as exc:
            raise CLIError(f"--image {name}={path}: {exc.strerror or exc}.", EXIT_USAGE) from None
    label = Path(args.graph).name if args.graph != "-" else "stdin graph"
    return _execute(ctx, graph, name=label, images=images)


def _execute(ctx: _Ctx, work: Any, *, name: str, images: dict[str, bytes] | None) -> int:
    """Submit ``work``, follow it with a live display, save the images, report."""
    args = ctx.args
    settings = ctx.load_settings()
    from ryla_gen._client import NOT_GIVEN

    timeout: Any = args.timeout if args.timeout is not None else NOT_GIVEN
    graph = work.to_api() if hasattr(work, "to_api") else work
    class_types = {
        str(k): str(v.get("class_type", "?")) for k, v in graph.items() if isinstance(v, dict)
    }
    started = time.monotonic()
    result: GenerationResult = _run_async(
        _follow_job(ctx, work, images=images, timeout=timeout, class_types=class_types)
    )
    paths = _save_images(result, args.out)
    wall = time.monotonic() - started
    if ctx.json:
        ctx.emit_json(
            {
                "ok": True,
                "job_id": result.job_id,
                "provider": result.provider,
                "workflow": name,
                "seed": result.seed,
                "images": [
                    {
                        "path": str(p.resolve()),
                        "filename": img.filename,
                        "width": img.width,
                        "height": img.height,
                        "content_type": img.content_type,
                        "node_id": img.node_id,
                    }
                    for p, img in zip(paths, result.images, strict=True)
                ],
                "timings": {**result.timings.as_dict(), "wall": round(wall, 3)},
            }
        )
        return EXIT_OK
    ctx.out.print(
        f"[green]✓[/green] {escape(name)} on {settings.provider}: job {escape(result.job_id)}"
        + (f", seed {result.seed}" if result.seed is not None else "")
    )
    for p, img in zip(paths, result.images, strict=True):
        ctx.out.print(f"  {escape(str(p))}  ({img.width}x{img.height})")
    t = result.timings
    parts = [
        f"{label} {value:.2f} s"
        for label, value in (
            ("queue", t.queue_wait),
            ("execution", t.execution),
            ("transfer", t.transfer),
            ("total", t.total if t.total is not None else wall),
        )
        if value is not None
    ]
    ctx.out.print("  timings: " + ", ".join(parts))
    return EXIT_OK


def _save_images(result: GenerationResult, out: Path) -> list[Path]:
    """Save every image into ``out``; never overwrite a different file of the same name."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"Cannot create the output folder {out}: {exc.strerror or exc}.") from None
    paths: list[Path] = []
    for img in result.images:
        name = Path(img.filename).name or "image.png"
        target = out / name
        n = 1
        while target.exists() and target.read_bytes() != img.data:
            target = out / f"{Path(name).stem}-{n}{Path(name).suffix}"
            n += 1
        target.write_bytes(img.data)
        paths.append(target)
    return paths


async def _follow_job(
    ctx: _Ctx,
    work: Any,
    *,
    images: dict[str, bytes] | None,
    timeout: Any,
    class_types: Mapping[str, str],
) -> GenerationResult:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    async with ctx.client() as client:
        job = await client.submit(work, images=images, timeout=timeout)
        live = not ctx.json and ctx.err.is_terminal
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=ctx.err,
            transient=True,
            disable=not live,
        )
        tracker = _Tracker(class_types)
        task = progress.add_task(f"job {job.id[:8]}: submitted", total=None)
        try:
            with progress:
                async for event in job.events(timeout=timeout):
                    line = tracker.update(event)
                    progress.update(
                        task,
                        description=f"job {job.id[:8]}: {tracker.description}",
                        total=tracker.total,
                        completed=tracker.completed,
                    )
                    if line and not live:
                        ctx.note(f"job {job.id}: {line}", style="dim")
        except asyncio.CancelledError:  # Ctrl-C: stop the remote job too
            with contextlib.suppress(Exception):
                await asyncio.wait_for(job.cancel(), timeout=10)
            ctx.err.print(f"Cancelled job {job.id}.", style="yellow")
            raise
        return await job.wait()


class _Tracker:
    """Turns job events into the progress display's text and numbers."""

    def __init__(self, class_types: Mapping[str, str]) -> None:
        self.class_types = class_types
        self.description = "submitted"
        self.total: float | None = None
        self.completed: float = 0
        self.seen: set[str] = set()
        self.cached = 0
        self.steps_mode = False
        self.node: str | None = None

    def _node_label(self, node: str | None) -> str:
        if node is None:
            return "?"
        return f"{self.class_types.get(node, '?')} (node {node})"

    def update(self, event: JobEvent) -> str | None:
        """Apply ``event``; return a one-line log message for state changes."""
        from ryla_gen.types import (
            Cancelled,
            Completed,
            Failed,
            NodeExecuting,
            NodeFinished,
            Progress,
            Queued,
            Started,
        )

        n_nodes = len(self.class_types)
        if isinstance(event, Queued):
            self.description = "queued" + (f" ({event.position} ahead)" if event.position else "")
            return self.description
        if isinstance(event, Started):
            self.description = "running"
            return "running"
        if isinstance(event, NodeExecuting):
            self.node = event.node
            self.seen.add(event.node)
            label = (
                f"{event.class_type} (node {event.node})"
                if event.class_type
                else self._node_label(event.node)
            )
            if self.steps_mode:
                self.description = label
            else:  # no sampler yet: the bar counts nodes
                self.description = f"{label}, nodes"
                self.total = float(max(n_nodes, len(self.seen)))
                self.completed = float(len(self.seen) - 1 + self.cached)
            return None
        if isinstance(event, Progress):
            self.steps_mode = True
            label = self._node_label(event.node or self.node)
            self.description = f"{label}, steps"
            self.total, self.completed = float(event.max), float(event.value)
            return None
        if isinstance(event, NodeFinished):
            if event.cached:
                self.cached += 1
            return None
        if isinstance(event, Completed):
            self.description = "done"
            if self.total is not None:
                self.completed = self.total
            return "completed"
        if isinstance(event, Failed):
            self.description = "failed"
            return "failed"
        if isinstance(event, Cancelled):
            self.description = "cancelled"
            return "cancelled"
        return None  # pragma: no cover


def _cmd_graph(ctx: _Ctx) -> int:
    wf = _build_workflow(ctx.args)
    text = json.dumps(_validated_graph(wf), indent=2) + "\n"
    output: Path | None = ctx.args.output
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CLIError(f"Cannot write {output}: {exc.strerror or exc}.", EXIT_USAGE) from None
        ctx.note(f"Wrote {output} ({wf.name}, seed {getattr(wf, 'seed', None)}).")
    return EXIT_OK


# ---------------------------------------------------------------------------- workflows


def _describe(cls: type[Workflow]) -> str:
    doc = (cls.__doc__ or "").strip().replace("``", "")
    return doc.split("\n\n", 1)[0].replace("\n", " ")


def _cmd_workflows_list(ctx: _Ctx) -> int:
    from ryla_gen.workflows import WORKFLOWS

    if ctx.json:
        ctx.emit_json([{"name": n, "description": _describe(c)} for n, c in WORKFLOWS.items()])
        return EXIT_OK
    table = Table(title="Workflows", title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("description")
    for name, cls in WORKFLOWS.items():
        table.add_row(name, escape(_describe(cls)))
    ctx.out.print(table)
    ctx.out.print("Parameters: ryla-gen workflows show NAME")
    return EXIT_OK


def _schema_type(s: Mapping[str, Any]) -> str:
    if "$ref" in s:
        return str(s["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in s:
        return " | ".join(dict.fromkeys(_schema_type(x) for x in s["anyOf"]))
    if "enum" in s and "type" not in s:
        return "choice"
    if "const" in s:
        return json.dumps(s["const"])
    kind = s.get("type")
    if kind == "array":
        return f"list[{_schema_type(s.get('items') or {})}]"
    names = {
        "integer": "int",
        "number": "float",
        "string": "str",
        "boolean": "bool",
        "null": "None",
    }
    if isinstance(kind, str):
        return names.get(kind, kind)
    return str(s.get("format") or "any")


def _num(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    return str(x) if isinstance(x, int) else f"{x:g}"


def _schema_limits(s: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for branch in [s, *(s.get("anyOf") or [])]:
        lo, hi = branch.get("minimum"), branch.get("maximum")
        if lo is not None and hi is not None:
            out.append(f"{_num(lo)}..{_num(hi)}")
        elif lo is not None:
            out.append(f">= {_num(lo)}")
        elif hi is not None:
            out.append(f"<= {_num(hi)}")
        if branch.get("multipleOf"):
            out.append(f"multiple of {_num(branch['multipleOf'])}")
        if branch.get("maxItems") is not None:
            out.append(f"at most {branch['maxItems']} items")
        if branch.get("maxLength") is not None:
            out.append(f"at most {branch['maxLength']} characters")
        if branch.get("enum"):
            out.append("one of: " + ", ".join(str(x) for x in branch["enum"]))
    return list(dict.fromkeys(out))


def _print_properties(
    ctx: _Ctx, props: Mapping[str, Any], required: Sequence[str], indent: str = ""
) -> None:
    for pname, s in props.items():
        line = Text(indent)
        line.append(pname, style="bold cyan")
        line.append(f"  {_schema_type(s)}", style="magenta")
        if pname in required:
            line.append("  required", style="yellow")
        elif "default" in s:
            default = s["default"]
            shown = "random" if default is None and pname == "seed" else json.dumps(default)
            line.append(f"  = {shown}")
        limits = _schema_limits(s)
        if limits:
            line.append("  [" + "; ".join(limits) + "]", style="green")
        ctx.out.print(line, soft_wrap=True)
        desc = str(s.get("description") or "")
        if desc:
            ctx.out.print(Text(f"{indent}    {desc}", style="dim"), soft_wrap=True)


def _cmd_workflows_show(ctx: _Ctx) -> int:
    cls = _workflow_class(ctx.args.name)
    schema = cls.model_json_schema()
    if ctx.json:
        ctx.emit_json(schema)
        return EXIT_OK
    ctx.out.print(Text(cls.name, style="bold"), Text(f"- {_describe(cls)}"), soft_wrap=True)
    ctx.out.print()
    _print_properties(ctx, schema.get("properties") or {}, schema.get("required") or [])
    for def_name, d in (schema.get("$defs") or {}).items():
        if not d.get("properties"):
            continue
        ctx.out.print()
        ctx.out.print(Text(f"{def_name}:", style="bold"), soft_wrap=True)
        _print_properties(ctx, d["properties"], d.get("required") or [], indent="  ")
    ctx.out.print()
    ctx.out.print(
        f"Set them with flags (--prompt, --size, --steps, --seed, --lora, --face, --pose) or "
        f"--set FIELD=VALUE, e.g. `ryla-gen generate {cls.name} --dry-run ...`.",
        soft_wrap=True,
    )
    return EXIT_OK


# ---------------------------------------------------------------------------- models


def _cmd_models(ctx: _Ctx) -> int:
    from ryla_gen import models as manifest

    workflow: str | None = ctx.args.workflow
    if workflow is not None:
        try:
            required = manifest.for_workflow(workflow)
        except ValueError as exc:
            raise CLIError(str(exc), EXIT_USAGE) from None
    else:
        required = manifest.all_model_files()
    uses: dict[str, list[str]] = {}
    for wname in manifest.workflow_names():
        for m in manifest.for_workflow(wname):
            uses.setdefault(m.relpath, []).append(wname)

    async def fetch() -> dict[str, list[str]] | None:
        async with ctx.client() as client:
            return await client.available_models()

    settings = ctx.load_settings()
    available = _run_async(fetch())
    rows = []
    missing_set = (
        {m.relpath for m in manifest.missing(required, available)}
        if available is not None
        else set()
    )
    for m in required:
        present: bool | None
        if available is None or (not m.in_graph and m.folder not in available):
            present = None
        else:
            present = m.relpath not in missing_set
        if ctx.args.missing and present is not False:
            continue
        rows.append((m, present))
    if ctx.json:
        ctx.emit_json(
            {
                "ok": True,
                "provider": settings.provider,
                "can_list": available is not None,
                "models": [
                    {**_model_dict(m, p), "workflows": uses.get(m.relpath, [])} for m, p in rows
                ],
                "missing": sorted(missing_set),
            }
        )
        return EXIT_OK
    title = f"Model files on {settings.provider}" + (f" for {workflow}" if workflow else "")
    table = Table(title=title, title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column("file (under ComfyUI/models)")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("source")
    table.add_column("workflows")
    for m, present in rows:
        mark = {True: "[green]✓[/green]", False: "[red]✗[/red]", None: "[yellow]?[/yellow]"}[
            present
        ]
        source = (m.repo_id or "-") + (" (gated)" if m.gated else "")
        table.add_row(
            mark,
            escape(m.relpath),
            _human_size(m.size),
            escape(source),
            ", ".join(uses.get(m.relpath, [])),
        )
    ctx.out.print(table)
    if available is None:
        ctx.out.print(
            f"The {settings.provider} provider cannot list its model files ('?').", soft_wrap=True
        )
    elif missing_set:
        ctx.out.print(_missing_hint(settings, len(missing_set)), soft_wrap=True)
    else:
        ctx.out.print("[green]Every listed file is present.[/green]")
    return EXIT_OK


def _missing_hint(settings: Settings, count: int) -> str:
    where = {
        "comfyui": (
            "download each missing file from its Hugging Face source into ComfyUI's "
            "models/<folder>/ (for `ryla-gen comfyui start`: <home>/models/<folder>/), e.g. "
            "`hf download REPO PATH --local-dir ...`; gated files need HF_TOKEN and an accepted "
            "licence. Or point RYLA_GEN_PROVIDER at modal or runpod, which have them"
        ),
        "modal": ("fill the app's volume: `modal run -m ryla_gen_modal.app::download_models`"),
        "runpod": "put them on the endpoint's network volume or bake them into its image",
    }[settings.provider]
    return f"{count} file(s) missing: {where}. `ryla-gen models --missing --json` lists their URLs."


# ---------------------------------------------------------------------------- loras


def _no_lora_api(settings: Settings) -> CLIError:
    where = {
        "comfyui": (
            "copy the .safetensors file into ComfyUI's models/loras folder (for `ryla-gen "
            "comfyui start`: <home>/models/loras/)"
        ),
        "runpod": "put it in models/loras on the endpoint's network volume or image",
    }.get(settings.provider, "put it in ComfyUI's models/loras folder")
    return CLIError(
        f"The {settings.provider} provider has no LoRA upload API: {where}, then use it with "
        "--lora NAME:STRENGTH. Upload and delete work with RYLA_GEN_PROVIDER=modal.",
        EXIT_USAGE,
    )


def _cmd_loras_list(ctx: _Ctx) -> int:
    settings = ctx.load_settings()

    async def fetch() -> list[dict[str, Any]] | None:
        async with ctx.client() as client:
            lister = getattr(client.provider, "list_loras", None)
            if lister is not None:
                loras: list[dict[str, Any]] = await lister()
                return loras
            available = await client.available_models()
            if available is None:
                return None
            return [{"name": n, "size": None} for n in available.get("loras", [])]

    loras = _run_async(fetch())
    if loras is None:
        raise CLIError(f"The {settings.provider} provider cannot list its LoRAs.", EXIT_USAGE)
    if ctx.json:
        ctx.emit_json({"ok": True, "provider": settings.provider, "loras": loras})
        return EXIT_OK
    if not loras:
        ctx.out.print(f"No LoRAs on {settings.provider} yet.")
        return EXIT_OK
    ctx.out.print(f"LoRAs on {settings.provider} ({len(loras)}):")
    table = Table()
    table.add_column("name")
    table.add_column("size", justify="right")
    for entry in loras:
        size = entry.get("size")
        table.add_row(
            escape(str(entry.get("name"))), _human_size(size if isinstance(size, int) else None)
        )
    ctx.out.print(table)
    return EXIT_OK


def _cmd_loras_upload(ctx: _Ctx) -> int:
    settings = ctx.load_settings()
    path: Path = ctx.args.path
    name: str = ctx.args.name or path.name
    if not name.endswith(".safetensors"):
        raise CLIError(
            f"LoRA names must end with .safetensors, got {name!r} (use --name).", EXIT_USAGE
        )
    try:
        data = path.expanduser().read_bytes()
    except OSError as exc:
        raise CLIError(f"Cannot read {path}: {exc.strerror or exc}.", EXIT_USAGE) from None

    async def upload() -> dict[str, Any]:
        async with ctx.client() as client:
            uploader = getattr(client.provider, "upload_lora", None)
            if uploader is None:
                raise _no_lora_api(settings)
            entry: dict[str, Any] = await uploader(name, data)
            return entry

    with ctx.err.status(f"Uploading {name} ({_human_size(len(data))})..."):
        entry = _run_async(upload())
    ctx.out.print(
        f"[green]✓[/green] uploaded {escape(str(entry.get('name', name)))} "
        f"({_human_size(entry.get('size') if isinstance(entry.get('size'), int) else len(data))}); "
        f"use it with --lora {escape(name)}:1.0"
    )
    return EXIT_OK


def _cmd_loras_delete(ctx: _Ctx) -> int:
    settings = ctx.load_settings()
    name: str = ctx.args.name

    async def delete() -> None:
        async with ctx.client() as client:
            deleter = getattr(client.provider, "delete_lora", None)
            if deleter is None:
                raise _no_lora_api(settings)
            await deleter(name)

    try:
        _run_async(delete())
    except NotFoundError:
        raise CLIError(
            f"There is no LoRA named {name!r} (see `ryla-gen loras list`).", EXIT_USAGE
        ) from None
    ctx.out.print(f"[green]✓[/green] deleted {escape(name)}")
    return EXIT_OK


# ---------------------------------------------------------------------------- jobs


def _cmd_jobs_status(ctx: _Ctx) -> int:
    job_id: str = ctx.args.job_id

    async def fetch() -> Any:
        async with ctx.client() as client:
            return await client.job(job_id).status()

    try:
        st = _run_async(fetch())
    except NotFoundError as exc:
        raise CLIError(f"{exc} Check the id.", EXIT_USAGE) from None
    data = {
        "id": st.id,
        "state": st.state.value,
        "queue_position": st.queue_position,
        "progress": list(st.progress) if st.progress else None,
        "node": st.node,
        "error": st.error,
    }
    if ctx.json:
        ctx.emit_json({"ok": True, **data})
        return EXIT_OK
    table = Table(show_header=False, box=None)
    for key, value in data.items():
        if value is not None:
            table.add_row(key, escape(str(value)))
    ctx.out.print(table)
    return EXIT_OK


def _cmd_jobs_cancel(ctx: _Ctx) -> int:
    job_id: str = ctx.args.job_id

    async def cancel() -> None:
        async with ctx.client() as client:
            await client.job(job_id).cancel()

    try:
        _run_async(cancel())
    except NotFoundError as exc:
        raise CLIError(f"{exc} Check the id.", EXIT_USAGE) from None
    ctx.out.print(f"Cancel requested for job {escape(job_id)}.")
    return EXIT_OK


# ---------------------------------------------------------------------------- serve


def _cmd_serve(ctx: _Ctx) -> int:
    import importlib.util
    import runpy

    rest: list[str] = list(ctx.args.rest)
    try:
        spec = importlib.util.find_spec("ryla_gen_modal.__main__")
    except ImportError:
        spec = None
    if spec is None:
        raise CLIError(
            "The local job API server is not available: install it with "
            "`pip install 'ryla-gen[server]'`.",
            EXIT_CONFIG,
        )
    saved = sys.argv[:]
    sys.argv = ["ryla-gen serve", "serve", *rest]
    try:
        runpy.run_module("ryla_gen_modal", run_name="__main__", alter_sys=True)
    except ImportError as exc:
        raise CLIError(
            f"The local job API server needs extra packages ({exc}): "
            "`pip install 'ryla-gen[server]'`.",
            EXIT_CONFIG,
        ) from None
    finally:
        sys.argv = saved
    return EXIT_OK


# ---------------------------------------------------------------------------- comfyui


def _home(ctx: _Ctx) -> Path:
    from ryla_gen.testing import default_home

    home: Path | None = ctx.args.home
    return (home if home is not None else default_home()).expanduser().resolve()


def _base_dir(ctx: _Ctx) -> Path:
    base: Path | None = getattr(ctx.args, "base_dir", None)
    return base.expanduser().resolve() if base is not None else _home(ctx)


def _read_pid(base: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((base / _PID_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_comfyui(pid: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file
    return b"main.py" in cmd


def _answers(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/system_stats", timeout=timeout) as resp:
            data = json.loads(resp.read())
            return data if isinstance(data, dict) else {}
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cmd_comfyui_install(ctx: _Ctx) -> int:
    from ryla_gen.testing import install_comfyui

    home = _home(ctx)
    try:
        inst = install_comfyui(home, log=lambda line: ctx.err.print(Text(line), soft_wrap=True))
    except RuntimeError as exc:
        raise CLIError(f"Installing ComfyUI into {home} failed: {exc}", EXIT_CONFIG) from None
    ctx.out.print(
        f"ComfyUI installed in {escape(str(inst.home))}. Start it: "
        f"ryla-gen comfyui start --home {escape(str(inst.home))}",
        soft_wrap=True,
    )
    return EXIT_OK


def _cmd_comfyui_start(ctx: _Ctx) -> int:
    from ryla_gen.testing import COMFYUI_VERSION, ComfyUIServer, install_comfyui

    home, base = _home(ctx), _base_dir(ctx)
    port: int = ctx.args.port
    url = f"http://127.0.0.1:{port}"
    state = _read_pid(base)
    if state is not None and _alive(state["pid"]) and _is_comfyui(state["pid"]):
        running_url = str(state.get("url", url))
        if _answers(running_url) is not None:
            ctx.out.print(f"ComfyUI is already running at {running_url} (pid {state['pid']}).")
            return EXIT_OK
    if not _port_free(port):
        raise CLIError(
            f"Port {port} on 127.0.0.1 is already in use"
            + (" (a ComfyUI answers there)" if _answers(url) is not None else "")
            + ". Stop that server, or pick another port with --port (then set "
            "RYLA_GEN_COMFYUI_URL to match).",
            EXIT_CONFIG,
        )
    try:
        inst = install_comfyui(
            home, log=lambda line: ctx.err.print(Text(line, style="dim"), soft_wrap=True)
        )
    except RuntimeError as exc:
        raise CLIError(f"Installing ComfyUI into {home} failed: {exc}", EXIT_CONFIG) from None
    server = ComfyUIServer(inst, base_dir=base, port=port, startup_timeout=ctx.args.timeout)
    t0 = time.monotonic()
    try:
        with ctx.err.status(f"Starting ComfyUI {COMFYUI_VERSION} on {url} (CPU)..."):
            server.start()
    except RuntimeError as exc:
        raise CLIError(f"ComfyUI did not start: {exc}", EXIT_PROVIDER) from None
    (base / _PID_FILE).write_text(
        json.dumps(
            {
                "pid": server.pid,
                "port": port,
                "url": server.url,
                "home": str(home),
                "base_dir": str(base),
                "log": str(server.log_path),
                "started_at": time.time(),
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    # Detach: the server runs in its own session and outlives this command.
    ctx.out.print(
        f"[green]✓[/green] ComfyUI {COMFYUI_VERSION} ready at [bold]{server.url}[/bold] after "
        f"{time.monotonic() - t0:.1f} s (pid {server.pid}).",
        soft_wrap=True,
    )
    ctx.out.print(f"  log:    {escape(str(server.log_path))}", soft_wrap=True)
    ctx.out.print(f"  models: {escape(str(server.models_dir))}/<folder>/", soft_wrap=True)
    if port != 8188:
        ctx.out.print(f"  export RYLA_GEN_COMFYUI_URL={server.url}", soft_wrap=True)
    ctx.out.print(
        f"  stop:   ryla-gen comfyui stop --home {escape(str(home))}"
        + (f" --base-dir {escape(str(base))}" if base != home else ""),
        soft_wrap=True,
    )
    return EXIT_OK


def _cmd_comfyui_stop(ctx: _Ctx) -> int:
    base = _base_dir(ctx)
    pid_path = base / _PID_FILE
    state = _read_pid(base)
    if state is None:
        ctx.out.print(f"No ComfyUI started by ryla-gen here (no {escape(str(pid_path))}).")
        return EXIT_OK
    pid: int = state["pid"]
    if not _alive(pid):
        pid_path.unlink(missing_ok=True)
        ctx.out.print(f"ComfyUI (pid {pid}) was not running; removed the stale pid file.")
        return EXIT_OK
    if not _is_comfyui(pid):
        raise CLIError(
            f"pid {pid} from {pid_path} is not ComfyUI any more; not touching it. "
            f"Delete {pid_path} if the server is gone.",
            EXIT_USAGE,
        )

    def signal_group(sig: int) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    signal_group(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        signal_group(signal.SIGKILL)
        while _alive(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.1)
    pid_path.unlink(missing_ok=True)
    ctx.out.print(
        f"[green]✓[/green] stopped ComfyUI (pid {pid}, {escape(str(state.get('url', '')))})."
    )
    return EXIT_OK


def _cmd_comfyui_status(ctx: _Ctx) -> int:
    base = _base_dir(ctx)
    state = _read_pid(base)
    url = str(state.get("url")) if state else f"http://127.0.0.1:{ctx.args.port}"
    pid = state["pid"] if state else None
    alive = pid is not None and _alive(pid)
    stats = _answers(url)
    version = None
    if stats is not None:
        version = (stats.get("system") or {}).get("comfyui_version")
    info = {
        "running": stats is not None,
        "url": url,
        "pid": pid if alive else None,
        "comfyui_version": version,
        "log": state.get("log") if state else None,
        "started_by_ryla_gen": alive,
    }
    if ctx.json:
        ctx.emit_json({"ok": stats is not None, **info})
    elif stats is not None:
        ctx.out.print(
            f"[green]✓[/green] ComfyUI {version or ''} is running at {url}"
            + (
                f" (pid {pid}, log {escape(str(info['log']))})"
                if alive
                else " (not started by ryla-gen)"
            ),
            soft_wrap=True,
        )
    else:
        ctx.out.print(
            f"ComfyUI is not running at {url}"
            + (f" (pid {pid} is alive but does not answer)" if alive else "")
            + ". Start it: ryla-gen comfyui start",
            soft_wrap=True,
        )
    return EXIT_OK if stats is not None else EXIT_PROVIDER


# ---------------------------------------------------------------------------- doctor


@dataclass
class _Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str
    seconds: float | None = None


def _comfyui_version(info: Mapping[str, Any]) -> str | None:
    system = info.get("system")
    if isinstance(system, Mapping) and system.get("comfyui_version"):
        return str(system["comfyui_version"])
    comfy = info.get("comfyui")
    if isinstance(comfy, Mapping) and comfy.get("version"):
        return str(comfy["version"])
    for key in ("comfyui_version", "comfy_version"):
        if info.get(key):
            return str(info[key])
    return None


async def _doctor(ctx: _Ctx) -> tuple[list[_Check], list[str], int]:
    """Run every check; return the rows, the advice paragraphs and the exit code."""
    from ryla_gen import models as manifest
    from ryla_gen.testing import tiny_graph

    settings = ctx.load_settings()
    where = {
        "comfyui": settings.comfyui_url,
        "modal": settings.modal_url or "",
        "runpod": f"endpoint {settings.runpod_endpoint_id}",
    }[settings.provider]
    checks = [_Check("configuration", "ok", f"provider {settings.provider} at {where}")]
    advice: list[str] = []
    code = EXIT_OK
    async with ctx.client() as client:
        provider = client.provider
        t0 = time.monotonic()
        try:
            info = await client.info()
        except APIError as exc:
            checks.append(_Check("reachable", "fail", _message(exc, settings)))
            return checks, advice, _exit_code(exc)
        checks.append(
            _Check(
                "reachable",
                "ok",
                f"answered in {time.monotonic() - t0:.2f} s",
                time.monotonic() - t0,
            )
        )

        available: dict[str, list[str]] | None = None
        try:
            available = await client.available_models()
        except AuthenticationError as exc:
            checks.append(_Check("authenticated", "fail", _message(exc, settings)))
            return checks, advice, EXIT_PROVIDER
        except APIError as exc:
            checks.append(_Check("model listing", "warn", _message(exc, settings)))
        if settings.provider == "comfyui":
            checks.append(_Check("authenticated", "skip", "ComfyUI has no authentication"))
        else:
            checks.append(_Check("authenticated", "ok", "credentials accepted"))

        version = _comfyui_version(info)
        comfy_info = info.get("comfyui")
        if isinstance(comfy_info, Mapping) and comfy_info.get("reachable") is False:
            checks.append(_Check("ComfyUI", "fail", "the app answers but its ComfyUI does not"))
            code = EXIT_PROVIDER
        else:
            devices = info.get("devices")
            device = ""
            if isinstance(devices, list) and devices and isinstance(devices[0], Mapping):
                device = f" on {devices[0].get('name') or devices[0].get('type')}"
            checks.append(
                _Check(
                    "ComfyUI version",
                    "ok" if version else "warn",
                    (version or "not reported") + device,
                )
            )

        object_info = getattr(provider, "object_info", None)
        if object_info is not None:
            try:
                nodes = await object_info()
                absent = [n for n in _INSTANTID_NODES if n not in nodes]
                if absent:
                    checks.append(
                        _Check(
                            "custom nodes",
                            "warn",
                            f"InstantID nodes missing ({', '.join(absent)}): instantid and "
                            "character-sheet will not run",
                        )
                    )
                    advice.append(
                        "InstantID needs the cubiq/ComfyUI_InstantID custom nodes (plus "
                        "insightface and onnxruntime) in ComfyUI's custom_nodes folder; the "
                        "Modal and RunPod "
                        "images ship them."
                    )
                else:
                    checks.append(
                        _Check(
                            "custom nodes",
                            "ok",
                            f"InstantID nodes present ({len(nodes)} node types)",
                        )
                    )
            except APIError as exc:
                checks.append(_Check("custom nodes", "warn", _message(exc, settings)))
        else:
            checks.append(
                _Check(
                    "custom nodes",
                    "skip",
                    f"the {settings.provider} image ships them; not checkable here",
                )
            )

        all_missing: list[ModelFile] = []
        if available is None:
            checks.append(
                _Check("models", "skip", f"the {settings.provider} provider cannot list its models")
            )
        else:
            for wname in manifest.workflow_names():
                lacking = manifest.missing(manifest.for_workflow(wname), available)
                all_missing.extend(m for m in lacking if m not in all_missing)
                if lacking:
                    names = ", ".join(m.relpath for m in lacking)
                    checks.append(
                        _Check(f"models: {wname}", "warn", f"{len(lacking)} missing: {names}")
                    )
                else:
                    checks.append(_Check(f"models: {wname}", "ok", "all present"))
            if all_missing:
                advice.append(
                    _missing_hint(settings, len(all_missing))
                    + " The provider works for model-free graphs meanwhile."
                )

        lister = getattr(provider, "list_loras", None)
        if lister is not None:
            try:
                loras = await lister()
                checks.append(_Check("LoRA storage", "ok", f"reachable, {len(loras)} LoRA(s)"))
            except APIError as exc:
                checks.append(_Check("LoRA storage", "fail", _message(exc, settings)))
                code = code or EXIT_PROVIDER
        elif available is not None:
            checks.append(
                _Check(
                    "LoRA storage",
                    "skip",
                    f"models/loras on the server ({len(available.get('loras', []))} file(s))",
                )
            )

        if ctx.args.no_run:
            checks.append(_Check("test graph", "skip", "--no-run"))
        else:
            graph = tiny_graph(
                width=64, height=64, color=random.randrange(1 << 24), prefix="ryla_doctor"
            )
            t0 = time.monotonic()
            try:
                result = await client.generate(graph, timeout=ctx.args.timeout)
                took = time.monotonic() - t0
                img = result.image
                checks.append(
                    _Check(
                        "test graph",
                        "ok",
                        f"EmptyImage -> SaveImage ran in {took:.2f} s "
                        f"({img.width}x{img.height} PNG back)",
                        took,
                    )
                )
            except RylaGenError as exc:
                checks.append(_Check("test graph", "fail", _message(exc, settings)))
                code = _exit_code(exc)
    return checks, advice, code


def _cmd_doctor(ctx: _Ctx) -> int:
    settings = ctx.load_settings()
    if ctx.err.is_terminal and not ctx.json:
        with ctx.err.status(f"Checking the {settings.provider} provider..."):
            checks, advice, code = _run_async(_doctor(ctx))
    else:
        checks, advice, code = _run_async(_doctor(ctx))
    if ctx.json:
        ctx.emit_json(
            {
                "ok": code == EXIT_OK,
                "exit_code": code,
                "provider": settings.provider,
                "checks": [
                    {"name": c.name, "status": c.status, "detail": c.detail, "seconds": c.seconds}
                    for c in checks
                ],
                "advice": advice,
            }
        )
        return code
    table = Table(title=f"ryla-gen doctor ({settings.provider})", title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("result")
    marks = {
        "ok": "[green]✓[/green]",
        "warn": "[yellow]![/yellow]",
        "fail": "[red]✗[/red]",
        "skip": "[dim]-[/dim]",
    }
    for c in checks:
        table.add_row(marks[c.status], escape(c.name), escape(c.detail))
    ctx.out.print(table)
    for paragraph in advice:
        ctx.out.print(Text(paragraph), soft_wrap=True)
    if code == EXIT_OK:
        ctx.out.print(f"[green]The {settings.provider} provider works.[/green]")
    else:
        ctx.out.print(f"[red]The {settings.provider} provider does not work (exit {code}).[/red]")
    return code


if __name__ == "__main__":
    sys.exit(main())
