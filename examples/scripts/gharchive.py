#!/usr/bin/env python3
"""gharchive.py - the steps of examples/github_archive.yaml (the seed's GitHub-archive ETL).

  gharchive.py list START END              JSON array of the hourly file names
  gharchive.py push DATA_DIR FILE STAGING  keep the PushEvents of one gzipped JSON-lines file
  gharchive.py table OUT                   flatten the commits of every staged file (a JSON
                                           array of `push` outputs on stdin) into OUT

Every value arrives as an argument; nothing is passed through a shell. Files are written to
a temporary name and renamed, so a retried or concurrent attempt never leaves half a file.
"""
import csv
import datetime
import gzip
import json
import os
import sys
import tempfile

DATE_FORMAT = "%d-%m-%Y"  # the seed's format: 01-01-2015
MAX_DAYS = 1800           # 43,200 names: the list stays under the 1 MiB output cap
MAX_LINE = 16 << 20       # a JSON line longer than this is skipped as bad
COLUMNS = ["user", "repo", "created_at", "message", "author"]


def die(msg, code=1):
    print("gharchive: " + msg, file=sys.stderr)
    sys.exit(code)


def write_atomic(path, write):
    """Calls write(file) on a temp file next to path, then renames it to path."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".%s." % os.path.basename(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cmd_list(start_s, end_s):
    # The seed: days range(0, (end - start).days), hours range(1, 24). GH Archive has hours
    # 0..23 and a user who asks for 01-01 .. 31-12 means the whole year, so here both ends
    # are included and every hour 0..23 is listed (docs/examples.md).
    try:
        start = datetime.datetime.strptime(start_s, DATE_FORMAT)
        end = datetime.datetime.strptime(end_s, DATE_FORMAT)
    except ValueError:
        die("dates are DD-MM-YYYY (e.g. 01-01-2015), got %r and %r" % (start_s, end_s), 2)
    days = (end - start).days + 1
    if days > MAX_DAYS:
        die("%d days between %s and %s: at most %d" % (days, start_s, end_s, MAX_DAYS), 2)
    names = []
    for x in range(max(days, 0)):
        day = (start + datetime.timedelta(days=x)).strftime("%Y-%m-%d")
        names.extend("%s-%d.json.gz" % (day, hour) for hour in range(24))
    print(json.dumps(names, separators=(",", ":")))


def safe_name(name):
    if not name or "/" in name or name.startswith(".") or "\0" in name:
        die("bad file name %r" % name, 2)
    return name


def cmd_push(data_dir, name, staging):
    path = os.path.join(data_dir, safe_name(name))
    if not os.path.isfile(path):
        # Not there yet (the archive publishes each hour late): fail so the task is retried.
        die("missing file %s" % path)
    events = bad = 0
    out = os.path.join(os.path.abspath(staging), name[: -len(".json.gz")] + ".push.ndjson"
                       if name.endswith(".json.gz") else name + ".push.ndjson")

    def write(f):
        nonlocal events, bad
        with gzip.open(path, "rb") as src:
            for line in src:
                if len(line) > MAX_LINE:
                    bad += 1
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(record, dict) and record.get("type") == "PushEvent":
                    f.write(json.dumps(record, separators=(",", ":")) + "\n")
                    events += 1

    try:
        write_atomic(out, write)
    except (OSError, EOFError) as e:
        die("cannot read %s: %s" % (path, e))
    print(json.dumps({"file": name, "events": events, "bad_lines": bad, "path": out}))


def rows_of(record):
    """The seed's to_dataframe: one row per commit; a record missing a key yields nothing."""
    try:
        user = record["actor"]["login"]
        repo = record["repo"]["name"]
        created = record["created_at"]
        for commit in record["payload"]["commits"]:
            yield [user, repo, created, commit["message"], commit["author"]["name"]]
    except (KeyError, TypeError):
        return


def cmd_table(out):
    parts = json.load(sys.stdin)
    if not isinstance(parts, list):
        die("stdin must be the JSON array of the push step's outputs", 2)
    ndjson = out.endswith(".ndjson") or out.endswith(".jsonl")
    rows = 0

    def write(f):
        nonlocal rows
        w = None if ndjson else csv.writer(f, lineterminator="\n")
        if w:
            w.writerow(COLUMNS)
        for part in parts:
            with open(part["path"], encoding="utf-8") as src:
                for line in src:
                    for row in rows_of(json.loads(line)):
                        if w:
                            w.writerow(row)
                        else:
                            f.write(json.dumps(dict(zip(COLUMNS, row))) + "\n")
                        rows += 1

    try:
        write_atomic(out, write)
    except (OSError, KeyError, TypeError, ValueError) as e:
        die("cannot write %s: %s" % (out, e))
    print(json.dumps({"path": os.path.abspath(out), "rows": rows, "files": len(parts),
                      "format": "ndjson" if ndjson else "csv"}))


def main(argv):
    if len(argv) == 3 and argv[0] == "list":
        cmd_list(argv[1], argv[2])
    elif len(argv) == 4 and argv[0] == "push":
        cmd_push(argv[1], argv[2], argv[3])
    elif len(argv) == 2 and argv[0] == "table":
        cmd_table(argv[1])
    else:
        die("usage: gharchive.py list START END | push DATA_DIR FILE STAGING | table OUT", 2)


if __name__ == "__main__":
    main(sys.argv[1:])
