#!/usr/bin/env python3
"""Runs the steps of a composite GitHub Action (action.yml) the way a runner does, locally.

No runner emulator is installable here (nektos/act is a Go program, not in any package registry
this project may use; docs/ci.md), so python/tests/test_github_action.py executes the action
with this script instead:

- inputs get their defaults from action.yml, overridden by `--input NAME=VALUE`;
- `${{ inputs.x }}`, `${{ github.action_path }}`, `${{ github.action_repository }}`,
  `${{ runner.temp }}` and `${{ steps.ID.outputs.x }}` are substituted in `env:`, `with:`,
  `working-directory:` and `run:` (an unknown expression is an error, never an empty string);
- `run:` steps run in order with `bash --noprofile --norc -eo pipefail FILE` (GitHub's `bash`
  shell), the environment of this process plus the step's `env:`, `GITHUB_OUTPUT` and
  `GITHUB_PATH` files that are read back after the step (outputs; PATH entries for later steps);
- `if:` supports `always()`, `success()`, `failure()` and `&&`; a step without `if:` runs only
  while no step failed, as on GitHub;
- `uses: actions/upload-artifact@v4` copies each `with.path` line into
  `--artifacts DIR/NAME/` and records which paths were missing (with `if-no-files-found: error`
  a missing file fails the step); any other `uses:` is an error.

Prints a JSON report on stdout: `steps[]` `{id, name, outcome, exit_code, outputs, uploaded,
missing}`, `outputs` (the action's), `exit_code` (the first failed step's, else 0). Exits with
that code.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


class ActionError(Exception):
    """action.yml uses something this runner does not emulate."""


def lookup(expr, ctx):
    parts = expr.split(".")
    if parts[0] == "inputs" and len(parts) == 2:
        if parts[1] not in ctx["inputs"]:
            raise ActionError(f"unknown input {parts[1]!r} in ${{{{ {expr} }}}}")
        return ctx["inputs"][parts[1]]
    if parts[0] in ("github", "runner") and len(parts) == 2:
        value = ctx[parts[0]].get(parts[1])
        if value is None:
            raise ActionError(f"${{{{ {expr} }}}} is not emulated")
        return value
    if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
        # An output a step did not set is the empty string, as on GitHub.
        return ctx["steps"].get(parts[1], {}).get(parts[3], "")
    raise ActionError(f"${{{{ {expr} }}}} is not emulated")


def subst(value, ctx):
    if value is None:
        return ""
    return EXPR.sub(lambda m: str(lookup(m.group(1), ctx)), str(value))


def condition(expr, failed, ctx):
    if expr is None:
        return not failed
    expr = EXPR.sub(lambda m: m.group(1), str(expr)).strip()
    result = True
    for term in (t.strip() for t in expr.split("&&")):
        if term == "always()":
            ok = True
        elif term == "success()":
            ok = not failed
        elif term == "failure()":
            ok = failed
        else:
            m = re.fullmatch(r"([\w.-]+)\s*(==|!=)\s*'([^']*)'", term)
            if not m:
                raise ActionError(f"if: {expr!r} is not emulated")
            left = lookup(m.group(1), ctx)
            ok = (left == m.group(3)) == (m.group(2) == "==")
        result = result and ok
    return result


def read_kv(path):
    """GITHUB_OUTPUT lines: NAME=VALUE, or NAME<<DELIM ... DELIM."""
    out, lines = {}, Path(path).read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            j = lines.index(delim, i + 1)
            out[name] = "\n".join(lines[i + 1:j])
            i = j + 1
            continue
        if "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        i += 1
    return out


def upload(step, ctx, artifacts):
    with_ = {k: subst(v, ctx) for k, v in (step.get("with") or {}).items()}
    name = with_.get("name") or "artifact"
    dest = Path(artifacts) / name
    dest.mkdir(parents=True, exist_ok=True)
    uploaded, missing = [], []
    for line in (ln.strip() for ln in with_.get("path", "").splitlines()):
        if not line:
            continue
        p = Path(line)
        if p.is_file():
            shutil.copy2(p, dest / p.name)
            uploaded.append(str(p))
        else:
            missing.append(line)
    failed = bool(missing) and with_.get("if-no-files-found", "warn") == "error"
    if not uploaded and with_.get("if-no-files-found", "warn") == "error":
        failed = True
    return uploaded, missing, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("action", type=Path, help="path of action.yml")
    ap.add_argument("--input", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--workspace", type=Path, default=Path.cwd(),
                    help="the job's working directory (GITHUB_WORKSPACE)")
    ap.add_argument("--artifacts", type=Path, required=True,
                    help="where upload-artifact steps copy their files")
    ap.add_argument("--repository", default="timetracer/timetracer",
                    help="github.action_repository")
    args = ap.parse_args()

    action = yaml.safe_load(args.action.read_text())
    if action.get("runs", {}).get("using") != "composite":
        raise ActionError("only composite actions are emulated")
    inputs = {name: str(spec.get("default", "")) for name, spec in
              (action.get("inputs") or {}).items()}
    for item in args.input:
        name, _, value = item.partition("=")
        if name not in inputs:
            raise ActionError(f"--input {name}: action.yml has no such input")
        inputs[name] = value
    for name, spec in (action.get("inputs") or {}).items():
        if spec.get("required") and not inputs[name]:
            raise ActionError(f"input {name!r} is required")

    temp = Path(tempfile.mkdtemp(prefix="action-runner-"))
    ctx = {
        "inputs": inputs,
        "github": {
            "action_path": str(args.action.resolve().parent),
            "action_repository": args.repository,
            "workspace": str(args.workspace.resolve()),
        },
        "runner": {"temp": str(temp), "os": "Linux"},
        "steps": {},
    }
    extra_path = []
    failed, exit_code, report = False, 0, []
    for index, step in enumerate(action["runs"]["steps"]):
        sid = step.get("id") or f"__{index}"
        entry = {"id": sid, "name": step.get("name", sid), "outcome": "skipped",
                 "exit_code": None, "outputs": {}}
        report.append(entry)
        if not condition(step.get("if"), failed, ctx):
            continue
        if "uses" in step:
            if not step["uses"].startswith("actions/upload-artifact@"):
                raise ActionError(f"uses: {step['uses']} is not emulated")
            uploaded, missing, step_failed = upload(step, ctx, args.artifacts)
            entry.update(uploaded=uploaded, missing=missing,
                         outcome="failure" if step_failed else "success")
            if step_failed:
                failed, exit_code = True, exit_code or 1
            continue
        if step.get("shell") != "bash":
            raise ActionError(f"step {sid}: only `shell: bash` is emulated")
        output, path_file = temp / f"{sid}.output", temp / f"{sid}.path"
        output.write_text("")
        path_file.write_text("")
        script = temp / f"{sid}.sh"
        script.write_text(subst(step["run"], ctx))
        env = dict(os.environ)
        env.update({k: subst(v, ctx) for k, v in (step.get("env") or {}).items()})
        env["PATH"] = os.pathsep.join([*extra_path, env.get("PATH", "")])
        env.update(GITHUB_OUTPUT=str(output), GITHUB_PATH=str(path_file),
                   GITHUB_ACTION_PATH=ctx["github"]["action_path"],
                   GITHUB_WORKSPACE=ctx["github"]["workspace"], RUNNER_TEMP=str(temp),
                   GITHUB_ACTIONS="true", CI="true")
        cwd = args.workspace / subst(step.get("working-directory", "."), ctx)
        print(f"::group::{entry['name']}", file=sys.stderr, flush=True)
        # The step's output goes to stderr: stdout carries the report.
        code = subprocess.call(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                               env=env, cwd=cwd, stdout=sys.stderr)
        print("::endgroup::", file=sys.stderr, flush=True)
        entry["exit_code"] = code
        entry["outputs"] = read_kv(output)
        ctx["steps"][sid] = entry["outputs"]
        extra_path = [p for p in path_file.read_text().splitlines() if p] + extra_path
        if code == 0:
            entry["outcome"] = "success"
        else:
            entry["outcome"] = "failure"
            if not failed:
                exit_code = code
            failed = True
    outputs = {name: subst(spec.get("value"), ctx) for name, spec in
               (action.get("outputs") or {}).items()}
    json.dump({"steps": report, "outputs": outputs, "exit_code": exit_code}, sys.stdout, indent=1)
    print()
    shutil.rmtree(temp, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ActionError as e:
        print(f"action_runner: {e}", file=sys.stderr)
        sys.exit(100)
