#!/usr/bin/env python3
"""taxi.py - the steps of examples/taxi_ingest.yaml (the seed's scheduled taxi ingestion).

  taxi.py check SOURCE_DIR STATE_DIR PATTERN INTENT   JSON array of {name, sha256} to process
  taxi.py process SOURCE_DIR NAME OUT_DIR             clean one CSV into OUT_DIR/NAME
  taxi.py commit STATE_DIR INTENT                     record the processed files (stdin: the
                                                      JSON array of process outputs)

The cursor is STATE_DIR/cursor.json: {"files": {name: sha256 of the content processed}}. A
normal run processes the files whose content is not in the cursor (new or changed), a
`reprocess` run every file, a `test_subset` run only the first file by name and leaves the
cursor alone. Every value arrives as an argument; nothing goes through a shell.
"""
import csv
import fcntl
import fnmatch
import hashlib
import json
import os
import sys
import tempfile

MAX_FILES = 10000           # files listed per run
MAX_FIELD = 1 << 20         # csv field size cap
NUMERIC = ("trip_miles", "trip_time", "base_passenger_fare", "tips", "driver_pay")


def die(msg, code=1):
    print("taxi: " + msg, file=sys.stderr)
    sys.exit(code)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def write_atomic(path, text):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".%s." % os.path.basename(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load_cursor(state_dir):
    try:
        with open(os.path.join(state_dir, "cursor.json"), encoding="utf-8") as f:
            files = json.load(f).get("files", {})
        return files if isinstance(files, dict) else {}
    except FileNotFoundError:
        return {}
    except ValueError as e:
        die("bad cursor %s: %s (remove it or run with --intent reprocess)"
            % (os.path.join(state_dir, "cursor.json"), e))


def listing(source_dir, pattern):
    """Regular files matching pattern, by name; hidden and partial files are not ready."""
    if not os.path.isdir(source_dir):
        die("source dir %s does not exist" % source_dir)
    names = []
    for name in sorted(os.listdir(source_dir)):
        if name.startswith(".") or name.endswith((".tmp", ".part")):
            continue
        if fnmatch.fnmatch(name, pattern) and os.path.isfile(os.path.join(source_dir, name)):
            names.append(name)
    if len(names) > MAX_FILES:
        die("%d files in %s: at most %d per run" % (len(names), source_dir, MAX_FILES))
    return names


def cmd_check(source_dir, state_dir, pattern, intent):
    names = listing(source_dir, pattern)
    if intent == "test_subset":
        names = names[:1]
    files = [{"name": n, "sha256": sha256_of(os.path.join(source_dir, n))} for n in names]
    if intent == "normal":
        seen = load_cursor(state_dir)
        files = [f for f in files if seen.get(f["name"]) != f["sha256"]]
    elif intent not in ("reprocess", "test_subset"):
        die("unknown intent %r" % intent, 2)
    print(json.dumps(files))


def clean_row(row):
    """Normalises one trip; returns None for a row to drop."""
    out = dict(row)
    lic = (row.get("hvfhs_license_num") or "").strip().upper()
    if not lic:
        return None
    out["hvfhs_license_num"] = lic
    for col in ("pickup_datetime", "dropoff_datetime"):
        if col in row:
            v = (row[col] or "").strip()
            out[col] = v.replace(" ", "T", 1) if v else ""
    for col in NUMERIC:
        if col in row:
            try:
                x = float(row[col])
            except (TypeError, ValueError):
                return None
            if x < 0 or x != x:
                return None
            out[col] = "%.2f" % x
    return out


def cmd_process(source_dir, name, out_dir):
    if not name or "/" in name or name.startswith("."):
        die("bad file name %r" % name, 2)
    src = os.path.join(source_dir, name)
    csv.field_size_limit(MAX_FIELD)
    kept, dropped = [], 0
    try:
        with open(src, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            for row in reader:
                c = clean_row(row)
                if c is None:
                    dropped += 1
                else:
                    kept.append(c)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        die("cannot read %s: %s" % (src, e))
    digest = sha256_of(src)
    if "hvfhs_license_num" not in fields:
        die("%s has no hvfhs_license_num column" % src)

    class Buf:
        def __init__(self):
            self.parts = []

        def write(self, s):
            self.parts.append(s)

    buf = Buf()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows(kept)
    out = os.path.join(out_dir, name)
    write_atomic(out, "".join(buf.parts))
    print(json.dumps({"name": name, "sha256": digest, "rows": len(kept), "dropped": dropped,
                      "path": os.path.abspath(out)}))


def cmd_commit(state_dir, intent):
    done = json.load(sys.stdin)
    if not isinstance(done, list):
        die("stdin must be the JSON array of the process step's outputs", 2)
    if intent == "test_subset":
        print(json.dumps({"committed": 0, "note": "test_subset runs leave the cursor alone"}))
        return
    os.makedirs(state_dir, exist_ok=True)
    # One commit at a time: two runs finishing together must not lose each other's files.
    with open(os.path.join(state_dir, ".cursor.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        files = load_cursor(state_dir)
        for d in done:
            files[d["name"]] = d["sha256"]
        write_atomic(os.path.join(state_dir, "cursor.json"),
                     json.dumps({"files": files}, indent=1, sort_keys=True) + "\n")
    print(json.dumps({"committed": len(done), "known": len(files)}))


def main(argv):
    if len(argv) == 5 and argv[0] == "check":
        cmd_check(*argv[1:])
    elif len(argv) == 4 and argv[0] == "process":
        cmd_process(*argv[1:])
    elif len(argv) == 3 and argv[0] == "commit":
        cmd_commit(*argv[1:])
    else:
        die("usage: taxi.py check SOURCE_DIR STATE_DIR PATTERN INTENT | "
            "process SOURCE_DIR NAME OUT_DIR | commit STATE_DIR INTENT", 2)


if __name__ == "__main__":
    main(sys.argv[1:])
