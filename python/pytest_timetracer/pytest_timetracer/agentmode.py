"""Replay with the agent (root): `timetracer-agent replay DIR --junit … --json-out … -- APP` once
for the directory; each request's result is read back from the JSON verdict and its explanation
from the JUnit report (the verdict's own lines for that request)."""

import json
import os
import shlex
import subprocess
import tempfile
import xml.etree.ElementTree as ET


class AgentReplay:
    def __init__(self, agent, directory, app, cwd=None, extra_args=(), keep_dir=None):
        self.agent = agent
        self.directory = directory
        self.app = shlex.split(app)
        self.cwd = cwd
        self.extra_args = list(extra_args)
        self.keep_dir = keep_dir
        self.verdict = None
        self.cases = {}  # JUnit test case name -> (tag, message, text) of its failure, or None
        self.by_path = {}  # cassette path -> the verdict's request entry
        self.exit_code = None
        self.output = ""
        self.error = None
        self.junit = self.verdict_path = None

    def run(self):
        out = self.keep_dir or tempfile.mkdtemp(prefix="pytest-timetracer-")
        os.makedirs(out, exist_ok=True)
        self.junit = os.path.join(out, "timetracer-junit.xml")
        self.verdict_path = os.path.join(out, "timetracer-verdict.json")
        cmd = [self.agent, "replay", self.directory, "--junit", self.junit,
               "--json-out", self.verdict_path, *self.extra_args]
        if self.cwd:
            cmd += ["--cwd", self.cwd]
        cmd += ["--", *self.app]
        try:
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except OSError as e:
            self.error = "cannot run %s: %s (--timetracer-agent names it)" % (self.agent, e)
            return self
        self.exit_code = p.returncode
        self.output = p.stdout.decode(errors="replace")
        try:
            with open(self.verdict_path, encoding="utf-8") as f:
                self.verdict = json.load(f)
        except (OSError, ValueError):
            self.error = "timetracer-agent replay exited with %d and wrote no verdict:\n%s" % (
                p.returncode, self.output[-6000:])
            return self
        for r in self.verdict.get("requests") or []:
            if r.get("cassette"):
                self.by_path[os.path.abspath(r["cassette"])] = r
        try:
            suite = ET.parse(self.junit).getroot().find("testsuite")
            for case in suite.iter("testcase"):
                failure = next(iter(case), None)
                if failure is not None and failure.tag in ("failure", "error", "skipped"):
                    self.cases[case.get("name")] = (failure.tag, failure.get("message") or "",
                                                    failure.text or "")
                else:
                    self.cases[case.get("name")] = None
        except (OSError, ET.ParseError, AttributeError) as e:
            self.error = "the JUnit report %s is unreadable (%s)" % (self.junit, e)
        return self
