"""The pytest plugin (entry point ``pytest11``: ``timetracer``).

Inert unless ``--timetracer-cassettes`` is given. Then every cassette under the directory is a
test item named like `timetracer-agent replay --junit` names its test case: ``METHOD target
(cassette id)``. The replay runs once, at the first item, for the whole directory.
"""

import os
import shlex
import shutil
from pathlib import Path

import pytest

from . import cassettes as _cassettes
from .agentmode import AgentReplay
from .hookmode import HookReplay

# The agent's two test cases besides the requests (docs/replay.md, "JUnit XML").
AGENT_CASES = ("app startup", "connections outside the recording")

HOOK_LIMITS = (
    "outbound HTTP (plain) answered from the cassettes through the Python hook, clock frozen on "
    "request; NOT mocked: databases, Redis, MongoDB, HTTPS dependencies, connections outside "
    "the recording, clients that connect in C such as libpq or libcurl (run as root for the agent)"
)


def pytest_addoption(parser):
    g = parser.getgroup("timetracer", "replay timetracer cassettes as tests")
    g.addoption("--timetracer-cassettes", metavar="DIR",
                help="cassette directory: each cassette becomes a test item")
    g.addoption("--timetracer-app", metavar="CMD",
                help='the app\'s start command, e.g. "uvicorn app:app --port 8000"')
    g.addoption("--timetracer-cwd", metavar="DIR",
                help="directory the app starts in (default: the current directory)")
    g.addoption("--timetracer-mode", choices=("auto", "agent", "hook"), default="auto",
                help="agent: timetracer-agent replay (root; every dependency mocked); hook: the "
                     "Python hook's HTTP and time control only (no root); auto (default): agent "
                     "when root, else hook")
    g.addoption("--timetracer-agent", metavar="PATH",
                help="timetracer-agent binary (default: $TIMETRACER_AGENT, else on PATH)")
    g.addoption("--timetracer-args", metavar="ARGS", default="",
                help="extra `timetracer-agent replay` arguments (agent mode), e.g. "
                     '"--mock postgres,redis --ignore-header x-request-id"')
    g.addoption("--timetracer-freeze-time", action="store_true",
                help="start the app's clock at the recording's (time.time, datetime.now ...)")
    g.addoption("--timetracer-report-dir", metavar="DIR",
                help="keep the agent's JUnit report and JSON verdict in DIR (agent mode)")


class _Setup:
    """The validated options, on ``config``."""

    def __init__(self, config):
        opt = config.option
        self.directory = os.path.abspath(opt.timetracer_cassettes)
        if not opt.timetracer_app:
            raise pytest.UsageError(
                "--timetracer-cassettes needs --timetracer-app: the app's start command, e.g. "
                '--timetracer-app "uvicorn app:app --port 8000"')
        try:
            if not shlex.split(opt.timetracer_app):
                raise ValueError("empty")
            self.extra = shlex.split(opt.timetracer_args or "")
        except ValueError as e:
            raise pytest.UsageError("--timetracer-app/--timetracer-args: %s" % e)
        self.app = opt.timetracer_app
        self.cwd = os.path.abspath(opt.timetracer_cwd or os.getcwd())
        self.agent = (opt.timetracer_agent or os.environ.get("TIMETRACER_AGENT")
                      or shutil.which("timetracer-agent"))
        root = os.geteuid() == 0
        mode = opt.timetracer_mode
        if mode == "auto":
            mode = "agent" if root and self.agent else "hook"
        if mode == "agent":
            if not root:
                raise pytest.UsageError(
                    "--timetracer-mode agent loads eBPF programs and needs root: run "
                    "`sudo -E pytest …`, or --timetracer-mode hook (no root, HTTP only)")
            if not self.agent:
                raise pytest.UsageError(
                    "timetracer-agent not found: --timetracer-agent PATH, TIMETRACER_AGENT, or "
                    "put it on PATH")
        self.mode = mode
        self.freeze_time = opt.timetracer_freeze_time
        self.report_dir = opt.timetracer_report_dir
        self.run = None

    def header(self):
        if self.mode == "agent":
            return ["timetracer: agent mode (root, %s): every dependency mocked by "
                    "timetracer-agent replay" % self.agent]
        return ["timetracer: hook mode (no agent): " + HOOK_LIMITS]

    def result(self, items):
        """Runs the replay once (at the first item), for every cassette item."""
        if self.run is None:
            found = [i.cassette for i in items if isinstance(i, CassetteItem)]
            if self.mode == "agent":
                extra = self.extra + (["--freeze-time"] if self.freeze_time else [])
                self.run = AgentReplay(self.agent, self.directory, self.app, self.cwd, extra,
                                       self.report_dir).run()
            else:
                self.run = HookReplay(found, self.app, self.cwd, self.freeze_time).run()
        return self.run


def pytest_configure(config):
    config._timetracer = None
    if config.getoption("timetracer_cassettes", None):
        config._timetracer = _Setup(config)


def pytest_report_header(config):
    setup = getattr(config, "_timetracer", None)
    return setup.header() if setup else None


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselect: they apply to cassette items too
def pytest_collection_modifyitems(session, config, items):
    setup = getattr(config, "_timetracer", None)
    if setup is None:
        return
    try:
        paths = _cassettes.find(setup.directory)
    except _cassettes.CassetteError as e:
        raise pytest.UsageError(str(e))
    if not paths:
        raise pytest.UsageError(
            "--timetracer-cassettes %s holds no cassette (*.json, *.json.gz, *.json.zst, "
            "*.age)" % setup.directory)
    # genitems reports each collector as pytest's own collection does ("collected N items").
    ours = []
    for p in paths:
        ours.extend(session.genitems(CassetteFile.from_parent(session, path=Path(p))))
    if setup.mode == "agent":
        first, last = session.genitems(ReplayDir.from_parent(session, path=Path(setup.directory)))
        ours = [first, *ours, last]
    items.extend(ours)
    setup.items = ours


class ReplayFailed(Exception):
    """A replayed request (or the replay) failed; the message is the verdict's explanation."""


class CassetteFile(pytest.File):
    def collect(self):
        try:
            c = _cassettes.load(str(self.path))
        except _cassettes.CassetteError as e:
            c = _cassettes.Cassette(str(self.path))
            c.load_error = str(e)
        yield CassetteItem.from_parent(self, name=c.name, cassette=c)


class ReplayDir(pytest.File):
    """The agent's replay of the directory: its `app startup` and `connections outside the
    recording` cases."""

    def collect(self):
        return [TimetracerCase.from_parent(self, name=n) for n in AGENT_CASES]


class _Item(pytest.Item):
    def _run(self):
        setup = self.config._timetracer
        return setup, setup.result(setup.items)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ReplayFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self):
        return self.path, None, "timetracer: %s" % self.name

    def _agent_case(self, run):
        if run.error:
            raise ReplayFailed(run.error)
        if self.name not in run.cases:
            raise ReplayFailed(
                "timetracer-agent replay (exit %s) has no result for %s; its output:\n%s"
                % (run.exit_code, self.name, run.output[-4000:]))
        case = run.cases[self.name]
        if case is None:
            return
        tag, message, text = case
        if tag == "skipped":
            pytest.skip(message)
        raise ReplayFailed("%s (%s)\n%s" % (message, tag, text.rstrip()))


class CassetteItem(_Item):
    def __init__(self, *, cassette, **kw):
        super().__init__(**kw)
        self.cassette = cassette

    def runtest(self):
        err = getattr(self.cassette, "load_error", None)
        if err:
            raise ReplayFailed(err)
        setup, run = self._run()
        if setup.mode == "agent":
            self._agent_case(run)
            return
        if self.cassette.data is None:
            raise ReplayFailed(
                "%s: hook mode reads .json and .json.gz cassettes only; replay zstd or encrypted "
                "ones as root (agent mode)" % self.cassette.path)
        if run.error:
            raise ReplayFailed("hook-mode replay failed: %s" % run.error)
        ok, why = run.results.get(self.cassette.path, (False, "not replayed"))
        notes = [n for n in run.notes if n.startswith(self.name)]
        if not ok:
            raise ReplayFailed(why + "".join("\n    note: " + n for n in notes))


class TimetracerCase(_Item):
    """`app startup` and `connections outside the recording` (agent mode)."""

    def runtest(self):
        _, run = self._run()
        self._agent_case(run)
