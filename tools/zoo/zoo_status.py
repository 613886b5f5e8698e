#!/usr/bin/env python3
"""Re-checks the committed zoo models (test/onnx/zoo) with the kiln CLI and rewrites only
their statuses in manifest.json; prints per model its status and the ONNX op types it uses
that the importer's table (frontends/onnx/onnx_ops.cc) lacks. Standard library only.

Run after changing the importer, when test/onnx/zoo_test.cc says a status is stale:
  python3 tools/zoo/zoo_status.py --kiln build/compiler/kiln
"""
import argparse
import json
import os
import re
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = os.path.join(REPO, "test", "onnx", "zoo")
MANIFEST = os.path.join(ZOO, "manifest.json")


def kiln_status(kiln, model_path):
    """'enabled' when `kiln dump` imports the model, else 'pending: ' and the first line it
    prints on stderr, less its 'kiln: ' prefix and with the checkout's path made relative, so
    the text is the same in every checkout (and as zoo_test.cc gets it from the importer)."""
    r = subprocess.run([kiln, "dump", model_path], capture_output=True, text=True)
    if r.returncode == 0:
        return "enabled"
    lines = [l for l in r.stderr.splitlines() if l.strip()] or [f"exit status {r.returncode}"]
    return "pending: " + lines[0].removeprefix("kiln: ").replace(REPO + os.sep, "")


def kiln_op_table():
    """The ONNX op types the importer's table handles."""
    text = open(os.path.join(REPO, "frontends", "onnx", "onnx_ops.cc")).read()
    return set(re.findall(r'\{"(\w+)", \{&Importer::', text))


def read_manifest():
    return json.load(open(MANIFEST))["models"] if os.path.exists(MANIFEST) else []


def write_manifest(entries):
    manifest = {"about": "kiln's model zoo (issue 16), written by tools/zoo/make_zoo.py; read by "
                         "test/onnx/zoo_test.cc. Paths are relative to this file's folder.",
                "models": entries}
    with open(MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def print_summary(entries):
    handled = kiln_op_table()
    for e in entries:
        missing = [op for op in e["op_types"] if op not in handled]
        print(f"{e['name']:16} {e['bytes']:>8} B  ops not in kiln's table: {', '.join(missing) or '-'}\n"
              f"{'':16} {e['status']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kiln", required=True, help="the kiln CLI")
    kiln = os.path.abspath(ap.parse_args().kiln)
    entries = read_manifest()
    for e in entries:
        e["status"] = kiln_status(kiln, os.path.join(ZOO, e["model"]))
    write_manifest(entries)
    print_summary(entries)


if __name__ == "__main__":
    main()
