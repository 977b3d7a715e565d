"""`upload-portal push PATH... --server URL [--group G] [--kv KEY=VALUE]... [--json]`

Files and folders (recursive) become one batch; the server groups them into jobs exactly as for the
page, refuses incomplete groups before any byte is sent, and the command waits for every job to end.
Exit status 1 when any job failed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from urllib.parse import urljoin

from app.client import FINAL, ClientError, Hashes, PortalClient, find_token


def kv_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key.strip(), value.strip()


def collect(paths: list[Path]) -> tuple[dict[str, Path], str | None]:
    """Names as the portal will see them ('/'-separated, relative to a folder's parent) -> files."""
    files: dict[str, Path] = {}
    folders = [p for p in paths if p.is_dir()]
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and not child.name.startswith("."):
                    files[child.relative_to(path.parent).as_posix()] = child
        elif path.is_file():
            files[path.name] = path
        else:
            raise ClientError(f"{path} does not exist")
    return files, folders[0].name if len(folders) == 1 else None


def bar(stream=sys.stderr):
    def show(name: str, sent: int, size: int) -> None:
        share = sent / size if size else 1.0
        filled = int(share * 30)
        stream.write(f"\r{name[-40:]:<40} [{'#' * filled}{'.' * (30 - filled)}] {share:6.1%}")
        if sent >= size:
            stream.write("\n")
        stream.flush()
    return show


def push(client: PortalClient, files: dict[str, Path], group: str | None, kvs: list[tuple[str, str]],
         folder: str | None, progress=None, on_behalf_of: str | None = None) -> tuple[list[dict], dict[str, str]]:
    """Send the files as one batch; return the final jobs and each file's SHA-1 (sent or found in OMERO)."""
    progress = progress or (lambda *_: None)
    if on_behalf_of:  # staff: the group is one of that user's; name it by id
        if group is None or not group.isdigit():
            raise ClientError("With --as, give --group as the id of one of that user's OMERO groups")
        group_id = int(group)
    else:
        group_id = client.group_id(group)
    batch = client.create_batch(group_id, files, kvs, folder, on_behalf_of)
    for skipped in batch.get("skipped", []):
        print(f"skipped {skipped['name']} ({skipped['reason']})", file=sys.stderr)
    sending = [job for job in batch["jobs"] if job["state"] == "uploading"]  # others were refused
    hashes = Hashes([files[f["name"]] for job in sending if job.get("may_be_in_omero", True) for f in job["files"]])
    sha1s = {}
    for job in sending:
        sha1s |= client.send_job(job, files, progress, hashes)
    jobs = client.wait(batch["id"], {job["id"] for job in batch["jobs"]})
    for job in jobs:  # embedded mode links within the portal: make them usable outside it
        job["link"] = job["link"] and urljoin(client.server + "/", job["link"])
    return jobs, sha1s


def table(jobs: list[dict], out=sys.stdout) -> None:
    rows = [(shown_state(job), " + ".join(f["name"] for f in job["files"]), result(job)) for job in jobs]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(("state", "files"))]
    out.write(f"{'state':<{widths[0]}}  {'files':<{widths[1]}}  result\n")
    for state, names, text in rows:
        out.write(f"{state:<{widths[0]}}  {names:<{widths[1]}}  {text}\n")


def shown_state(job: dict) -> str:
    """The state, marked when an imported image needs checking (its date, microscope... unknown)."""
    return f"{job['state']}, check" if job["state"] == "imported" and job.get("warnings") else job["state"]


def result(job: dict) -> str:
    if job["state"] != "imported":
        return job["link"] or job["message"]
    text = f"{job['link']} ({job['summary']})"
    return text + (f"; check: {', '.join(job['warnings'])}" if job.get("warnings") else "")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="upload-portal push", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    parser.add_argument("--server", default=os.environ.get("PORTAL_SERVER"), help="the portal's URL ($PORTAL_SERVER)")
    parser.add_argument("--group", help="OMERO group name or id (default: your default group)")
    parser.add_argument("--kv", action="append", type=kv_pair, default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", action="store_true", help="one JSON object per job on standard output")
    parser.add_argument("--as", dest="on_behalf_of", metavar="USER",
                        help="staff: import for this OMERO user (the images become theirs); --group is then a group id")
    args = parser.parse_args(argv)
    if not args.server:
        parser.error("give --server URL (or set PORTAL_SERVER)")
    try:
        client = PortalClient(args.server, find_token())
        files, folder = collect(args.paths)
        jobs, _ = push(client, files, args.group, args.kv, folder, None if args.json else bar(), args.on_behalf_of)
    except ClientError as e:
        print(f"upload-portal push: {e}", file=sys.stderr)
        return 1
    if args.json:
        for job in jobs:
            print(json.dumps({"job_id": job["id"], "files": [f["name"] for f in job["files"]], "state": job["state"],
                              "message": job["message"], "link": job["link"], "image_ids": job["image_ids"],
                              "images": [image["name"] for image in job["images"]],
                              "project": job["project"], "dataset": job["dataset"], "summary": job["summary"],
                              "warnings": job["warnings"]}))
    else:
        table(jobs)
    return 1 if any(job["state"] == "failed" for job in jobs) or not all(j["state"] in FINAL for j in jobs) else 0
