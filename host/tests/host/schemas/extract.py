#!/usr/bin/env python3
"""Writes the directory schema each landed commit created, for the upgrade tests.

Every commit below changed the directory's tables; a database made by it is one an
operator may still hold. For each, this reads the schema the store created at open
(the SQL constants that `SqliteState::init` and `PostgresState::connect` executed at
that commit) from git and writes it to `sqlite-NN-<commit>.sql` and
`postgres-NN-<commit>.sql` beside this file. `tests/host/schema.rs` makes a database
from each and opens it with today's store. Run from the repository root when a new
schema lands (add its commit to COMMITS):

    python3 host/tests/host/schemas/extract.py
"""
import os
import re
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))

# The commits that changed the directory's tables, oldest first.
COMMITS = [
    "4798f1d", "a80196b", "612a44f", "adf7076", "c1ad622", "6c81413", "b80c806",
    "82ff38b", "2948966", "d66b384", "2290f37", "9a11c76", "b091dc6",
]

CONST = r'(?:pub(?:\([a-z]+\))?\s+)?const {name}: &str =\s*"((?:[^"\\]|\\.)*)";'


def show(commit, path):
    done = subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def literal(source, name):
    found = re.search(CONST.format(name=name), source, re.S)
    if not found:
        raise SystemExit(f"no const {name}")
    return found.group(1).replace('\\"', '"').replace("\\\\", "\\")


def schema(commit, store, call):
    source = show(commit, f"host/src/state/{store}.rs")
    if source is None:
        return None
    opening = source[source.index("fn init" if store == "sqlite" else "fn connect"):]
    opening = opening[:opening.index("Ok(Self")]
    parts = []
    for argument in re.findall(call + r"\(([A-Za-z_:]+)\)\?", opening):
        module, _, name = argument.rpartition("::")
        module = module.replace("super::", "") if module else store
        text = source if module == store else show(commit, f"host/src/state/{module}.rs")
        parts.append(literal(text, name).strip())
    return "\n".join(parts) + "\n"


def main():
    for n, commit in enumerate(COMMITS, 1):
        for store, call in [("sqlite", "execute_batch"), ("postgres", "batch_execute")]:
            text = schema(commit, store, call)
            if text is None:
                continue
            out = os.path.join(HERE, f"{store}-{n:02}-{commit}.sql")
            with open(out, "w") as f:
                f.write(f"-- The {store} directory schema as commit {commit} created it.\n{text}")
            print("wrote", os.path.relpath(out))


if __name__ == "__main__":
    main()
