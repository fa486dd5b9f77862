#!/usr/bin/python3
"""Check what enclavectl printed with --json against docs/json/enclavectl.schema.json, with an
independent validator (Debian's python3-jsonschema, Draft 2020-12), not with our own code.

Usage: json_check.py SCHEMA COMMANDS RUNS

  COMMANDS  the output of `enclavectl help --json`: every command of the dispatch table
  RUNS      JSON lines, one per enclavectl run made with --json:
            {"command": "grant list", "argv": [...], "status": N, "stdout": TEXT}

Checks, each a failure with a message naming the command:
  - the schema is a valid Draft 2020-12 schema;
  - every command that prints JSON has a schema of its own ($defs["<object> <command>"]) and
    at least one successful run, and every command that prints none was run with --json and
    refused it with a usage error object (so a new command without a schema, or never run
    here, fails);
  - every $defs entry named like a command names one that exists;
  - every successful run's stdout validates against its command's schema (one document, or
    one per line where the schema says x-enclave-json-lines); every failed run's stdout is
    exactly one error object (exit 2 with code "usage", else exit 1) naming the command, except
    a command whose schema says x-enclave-output-on-failure, which may exit 1 with its own
    document (access check: deny; audit verify: findings).
Exit 0 when all hold, 1 otherwise (each failure on stderr), 2 on bad usage.
"""
import json
import sys
import urllib.parse

import jsonschema


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        schema = json.load(f)
    with open(argv[2]) as f:
        commands = json.load(f)["commands"]
    runs = []
    with open(argv[3]) as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))

    jsonschema.Draft202012Validator.check_schema(schema)
    defs = schema["$defs"]
    failures = []

    def validator(name):
        ref = {"$schema": schema["$schema"], "$defs": defs,
               "$ref": "#/$defs/" + urllib.parse.quote(name)}
        return jsonschema.Draft202012Validator(ref)

    def errors_of(name, doc):
        return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(top)", e.message)
                for e in validator(name).iter_errors(doc)]

    names = {c["command"] for c in commands}
    for d in defs:
        if " " in d or d in ("status", "whoami", "help"):
            if d not in names:
                failures.append("schema $defs[%r] names no command of enclavectl" % d)

    ok_runs = {}
    refused = set()
    for i, run in enumerate(runs):
        cmd, out, status = run["command"], run["stdout"], run["status"]
        where = "run %d (%s, exit %d)" % (i, " ".join(run.get("argv", [cmd])), status)
        if cmd not in names:
            failures.append("%s: no such command in `help --json`" % where)
            continue
        if status == 1 and defs.get(cmd, {}).get("x-enclave-output-on-failure"):
            try:
                doc = json.loads(out)
            except ValueError:
                doc = None
            if isinstance(doc, dict) and "error" not in doc:
                errs = errors_of(cmd, doc)
                failures.extend("%s: %s" % (where, e) for e in errs)
                if not errs:
                    ok_runs[cmd] = ok_runs.get(cmd, 0) + 1
                continue
        if status != 0:
            try:
                doc = json.loads(out)
            except ValueError as e:
                failures.append("%s: stdout is not one JSON error object: %s" % (where, e))
                continue
            errs = errors_of("error", doc)
            if not errs:
                code = doc["error"]["code"]
                if (status == 2) != (code == "usage"):
                    errs.append("code %r with exit status %d" % (code, status))
                if doc["error"]["command"] not in (cmd, ""):
                    errs.append("command %r, not %r" % (doc["error"]["command"], cmd))
            if errs:
                failures.extend("%s: error object: %s" % (where, e) for e in errs)
            elif code == "usage" and status == 2:
                refused.add(cmd)
            continue
        if cmd not in defs:
            failures.append("%s: the schema has no $defs[%r] for its output" % (where, cmd))
            continue
        if defs[cmd].get("x-enclave-json-lines"):
            docs = []
            for k, line in enumerate(out.splitlines()):
                try:
                    docs.append(json.loads(line))
                except ValueError as e:
                    failures.append("%s: line %d is not JSON: %s" % (where, k + 1, e))
        else:
            try:
                docs = [json.loads(out)]
            except ValueError as e:
                failures.append("%s: stdout is not one JSON document: %s" % (where, e))
                continue
        bad = False
        for doc in docs:
            for e in errors_of(cmd, doc):
                failures.append("%s: %s" % (where, e))
                bad = True
        if not bad:
            ok_runs[cmd] = ok_runs.get(cmd, 0) + 1

    for c in commands:
        name = c["command"]
        if c["json"]:
            if name not in defs:
                failures.append("command %r prints JSON but the schema has no $defs[%r]" %
                                (name, name))
            elif name not in ok_runs:
                failures.append("command %r: no successful --json run was checked" % name)
        elif name not in refused:
            failures.append("command %r prints no JSON, but no run showed it refusing --json "
                            "with a usage error object" % name)

    for f in failures:
        print("json_check: " + f, file=sys.stderr)
    print("json_check: %d commands, %d runs, %d of them checked against their command's schema, %d failures" %
          (len(commands), len(runs), sum(ok_runs.values()), len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
