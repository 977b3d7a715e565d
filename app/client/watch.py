"""`upload-portal watch DIR [--group G] [--kv KEY=VALUE]... [--delete-after-import]`

Polls DIR (network shares need no inotify): a file is sent once its size and time stay unchanged for
--stable seconds and its group is complete (an EMI with its SERs, an MRC with its XML). A ledger
beside the files remembers what was sent, so a restarted watcher sends nothing twice. With
--delete-after-import a file is deleted only once the portal confirms that OMERO holds an image of
the same content and the local file still has the SHA-1 that was sent.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from app.client import FINAL, ClientError, Hashes, PortalClient, find_token, sha1_of
from app.client.push import kv_pair
from converters.grouping import group_files

log = logging.getLogger("upload-portal.watch")
LEDGER = ".upload-portal-ledger.json"


@dataclass
class Seen:
    size: int
    mtime_ns: int
    since: float  # when it last changed


class Watcher:
    def __init__(self, client: PortalClient, root: Path, *, group: str | None = None,
                 kvs: list[tuple[str, str]] | None = None, delete_after_import: bool = False,
                 stable_seconds: float = 30.0, ledger: Path | None = None, clock=time.monotonic):
        self.client, self.root = client, root
        self.group, self.kvs, self.delete = group, kvs or [], delete_after_import
        self.stable_seconds, self.clock = stable_seconds, clock
        self.ledger_path = ledger or root / LEDGER
        self.ledger: dict[str, dict] = json.loads(self.ledger_path.read_text()) if self.ledger_path.exists() else {}
        self.seen: dict[str, Seen] = {}

    def _save(self) -> None:
        part = self.ledger_path.with_name(self.ledger_path.name + ".part")
        part.write_text(json.dumps(self.ledger, indent=1, sort_keys=True))
        os.replace(part, self.ledger_path)  # atomic on Windows too: a crash keeps the old ledger

    def scan(self) -> list[str]:
        """Update what is on disk; return the names whose files have been still long enough."""
        now, present = self.clock(), {}
        for path in self.root.rglob("*"):
            name = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.name.startswith(".") and path != self.ledger_path:
                stat = path.stat()
                present[name] = (stat.st_size, stat.st_mtime_ns)
        for name, (size, mtime) in present.items():
            seen = self.seen.get(name)
            if seen is None or (seen.size, seen.mtime_ns) != (size, mtime):
                self.seen[name] = Seen(size, mtime, now)
        for gone in set(self.seen) - set(present):
            del self.seen[gone]
        return [name for name, seen in self.seen.items() if now - seen.since >= self.stable_seconds]

    def _sent_already(self, name: str) -> bool:
        entry, seen = self.ledger.get(name), self.seen[name]
        return entry is not None and (entry["size"], entry["mtime_ns"]) == (seen.size, seen.mtime_ns)

    def send_ready(self) -> int:
        """Send every complete group of still files not sent before; return how many jobs."""
        stable = [name for name in self.scan() if not self._sent_already(name)]
        ready = [g for g in group_files(stable) if not g.error]
        if not ready:
            return 0
        files = {name: self.root / name for group in ready for name in group.files}
        batch = self.client.create_batch(self.client.group_id(self.group), files, self.kvs, self.root.name)
        for job in batch["jobs"]:
            for remote in job["files"]:
                seen = self.seen[remote["name"]]
                self.ledger[remote["name"]] = {"size": seen.size, "mtime_ns": seen.mtime_ns, "batch": batch["id"],
                                               "job": job["id"], "state": job["state"], "message": job["message"],
                                               "sha1": None}
        self._save()  # the whole batch before any byte: a restart resumes these jobs, never makes new ones
        sending = [job for job in batch["jobs"] if job["state"] == "uploading"]
        hashes = Hashes([files[f["name"]] for job in sending if job.get("may_be_in_omero", True) for f in job["files"]])
        for job in sending:
            self._send_job(job, files, hashes)
        log.info("sent %d job(s) in batch %s", len(batch["jobs"]), batch["id"])
        return len(batch["jobs"])

    def resume(self) -> None:
        """Finish sending what a stopped watcher had begun (its jobs are still waiting for bytes)."""
        for name, entry in self.ledger.items():
            if entry["state"] == "uploading" and entry["sha1"] is None and (self.root / name).is_file():
                job = next(j for j in self.client.batch(entry["batch"])["jobs"] if j["id"] == entry["job"])
                if job["state"] == "uploading":
                    paths = {f["name"]: self.root / f["name"] for f in job["files"]}
                    self._send_job(job, paths, Hashes([]))

    def _send_job(self, job: dict, paths: dict[str, Path], hashes: Hashes) -> None:
        for name, sha1 in self.client.send_job(job, paths, lambda *_: None, hashes).items():
            self.ledger[name].update(sha1=sha1, state=job["state"], message=job["message"])
        self._save()

    def check(self) -> None:
        """Note how sent jobs ended; with --delete-after-import, delete what OMERO confirms."""
        open_jobs = {(e["batch"], e["job"]) for e in self.ledger.values() if e["state"] not in FINAL or
                     (self.delete and e["state"] in ("imported", "duplicate") and not e.get("deleted")
                      and not e.get("kept"))}
        for batch_id, job_id in open_jobs:
            job = next(j for j in self.client.batch(batch_id)["jobs"] if j["id"] == job_id)
            names = [name for name, e in self.ledger.items() if e["job"] == job_id]
            for name in names:
                self.ledger[name].update(state=job["state"], message=job["message"])
            if self.delete and job["state"] in ("imported", "duplicate"):
                self._delete_confirmed(job_id, names)
            self._save()

    def _delete_confirmed(self, job_id: int, names: list[str]) -> None:
        confirmation = self.client.confirm(job_id)
        if not confirmation["in_omero"]:
            reason = confirmation.get("reason") or "OMERO does not confirm the content"
            log.warning("keeping %s: %s", ", ".join(names), reason)
            for name in names:  # said once; the files stay
                self.ledger[name]["kept"] = reason
            return
        for name in names:
            path, entry = self.root / name, self.ledger[name]
            if not path.exists():
                entry["deleted"] = True
                continue
            if sha1_of(path) != entry["sha1"] or confirmation["sha1"].get(name) != entry["sha1"]:
                log.warning("%s changed since it was sent; keeping it", name)
                continue
            path.unlink()
            entry["deleted"] = True
            log.info("deleted %s: OMERO holds it (%s)", name, confirmation["images"][0]["url"])

    def run(self, interval: float, rounds: int | None = None) -> None:
        self.resume()
        done = 0
        while rounds is None or done < rounds:
            try:
                self.send_ready()
                self.check()
            except ClientError as e:  # the portal is away or refused: keep watching, try next round
                log.warning("%s", e)
            done += 1
            time.sleep(interval)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="upload-portal watch", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--server", default=os.environ.get("PORTAL_SERVER"), help="the portal's URL ($PORTAL_SERVER)")
    parser.add_argument("--group", help="OMERO group name or id (default: your default group)")
    parser.add_argument("--kv", action="append", type=kv_pair, default=[], metavar="KEY=VALUE")
    parser.add_argument("--delete-after-import", action="store_true")
    parser.add_argument("--stable", type=float, default=30.0, help="seconds a file must stay unchanged (30)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between scans (10)")
    parser.add_argument("--ledger", type=Path, help=f"where to remember what was sent (DIR/{LEDGER})")
    args = parser.parse_args(argv)
    if not args.server:
        parser.error("give --server URL (or set PORTAL_SERVER)")
    if not args.dir.is_dir():
        parser.error(f"{args.dir} is not a folder")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        watcher = Watcher(PortalClient(args.server, find_token()), args.dir, group=args.group, kvs=args.kv,
                          delete_after_import=args.delete_after_import, stable_seconds=args.stable, ledger=args.ledger)
        watcher.run(args.interval)
    except ClientError as e:
        log.error("%s", e)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0
