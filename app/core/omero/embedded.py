"""The embedded OMERO store: what embedded mode imports into, so a newcomer sees the whole flow.

Files land in a readable tree, `files/<group>/<project>/<dataset>/<import>_<name>/`, with an
`annotations.json` beside them; a SQLite index answers the boundary's queries (by checksum, by tag
text) without scanning anything. It follows the same rules as OMERO: users see their own images,
names are not identity, content is; an import makes one image per series of its file (series.py),
all in one fileset (one folder), deleted together or not at all.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from pathlib import Path

from app import __version__
from app.core.omero.thumbnail import NoThumbnail, png_thumbnail
from app.core.omero.base import (
    CLIENT_KV_NAMESPACE, FILESET, KEY_VALUES_LIMIT, METADATA_NAMESPACE, ORIGINAL_NAMESPACE, PROVENANCE_NAMESPACE,
    COMPLETE_KEY, Annotations, FileToAttach, Group, Identity, ImageRef, OmeroError, PartOfFileset, PermissionDenied,
    Placement, Progress, SessionExpired, StoredFile, iter_files_in_blocks,
)
from app.core.omero.series import image_names

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, username TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS groups (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS members (user_id INTEGER, group_id INTEGER, position INTEGER,
    PRIMARY KEY (user_id, group_id));
CREATE TABLE IF NOT EXISTS sessions (key TEXT PRIMARY KEY, user_id INTEGER NOT NULL,
    ttl REAL NOT NULL, last_used REAL NOT NULL);
CREATE TABLE IF NOT EXISTS projects (id INTEGER PRIMARY KEY, group_id INTEGER, owner_id INTEGER, name TEXT,
    UNIQUE (group_id, owner_id, name));
CREATE TABLE IF NOT EXISTS datasets (id INTEGER PRIMARY KEY, project_id INTEGER, name TEXT,
    UNIQUE (project_id, name));
CREATE TABLE IF NOT EXISTS images (id INTEGER PRIMARY KEY, dataset_id INTEGER, owner_id INTEGER,
    group_id INTEGER, name TEXT, description TEXT, sha1 TEXT, content_sha1 TEXT, job_uid TEXT,
    path TEXT, annotations TEXT, created REAL);
CREATE INDEX IF NOT EXISTS images_sha1 ON images (owner_id, sha1);
CREATE INDEX IF NOT EXISTS images_content ON images (owner_id, content_sha1);
CREATE TABLE IF NOT EXISTS tags (id INTEGER PRIMARY KEY, group_id INTEGER, text TEXT, UNIQUE (group_id, text));
CREATE TABLE IF NOT EXISTS image_tags (image_id INTEGER, tag_id INTEGER, PRIMARY KEY (image_id, tag_id));
CREATE TABLE IF NOT EXISTS files (id INTEGER PRIMARY KEY, owner_id INTEGER, group_id INTEGER, name TEXT,
    size INTEGER, sha1 TEXT, path TEXT, namespace TEXT, kind TEXT);
CREATE TABLE IF NOT EXISTS image_files (image_id INTEGER, file_id INTEGER, PRIMARY KEY (image_id, file_id));
"""
# An image's fileset is its folder: the images one import made share it.
_PROVENANCE = f'$.maps."{PROVENANCE_NAMESPACE}"'
_COMPLETE = f'{_PROVENANCE}."{COMPLETE_KEY}"'


INCOMING_STALE_SECONDS = 3600


def _safe_segment(name: str) -> str:
    """One path segment a person can read, that cannot climb out of the tree."""
    name = re.sub(r"[\x00-\x1f\x7f/\\:*?\"<>|]", "_", name).strip(" .")
    return name[:120] or "_"


class EmbeddedGateway:
    def __init__(self, root: Path, web_url: str = "/store", groups: Sequence[str] = ("Lab",)):
        self.root = Path(root)
        self.web_url = web_url.rstrip("/")
        self.groups = list(groups) or ["Lab"]
        (self.root / "files").mkdir(parents=True, exist_ok=True)
        (self.root / "incoming").mkdir(exist_ok=True)
        self._sweep_incoming()
        with closing(sqlite3.connect(self.root / "store.sqlite", timeout=30)) as db:
            db.execute("PRAGMA journal_mode=WAL")  # workers read while another imports
            db.executescript(_SCHEMA)
        self._record_older_filesets()
        self._mark_older_imports()

    def _mark_older_imports(self) -> None:
        """Images of a store made before imports were marked complete: the store imported each in one
        step, and its job ended, so each is complete (marked once: the store's user_version says so)."""
        with self._db() as db:
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version < 1:
                db.execute("UPDATE images SET annotations = json_set(annotations, ?, 'before marks') "
                           "WHERE json_extract(annotations, ?) IS NOT NULL", (_COMPLETE, _PROVENANCE))
                db.execute("PRAGMA user_version = 1")

    def _sweep_incoming(self) -> None:
        """Remove copies a killed worker left half-written in incoming/ (a copy under way writes
        every few milliseconds, so an hour without a write means nobody is writing it)."""
        stale = time.time() - INCOMING_STALE_SECONDS
        for entry in (self.root / "incoming").iterdir():
            with suppress(FileNotFoundError):  # another process swept or renamed it meanwhile
                parts = [entry, *entry.iterdir()] if entry.is_dir() else [entry]
                if max(p.stat().st_mtime for p in parts) < stale:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

    def _record_older_filesets(self) -> None:
        """Images imported before files were recorded: their fileset file is the one beside
        annotations.json, so confirm finds it like any other."""
        with self._db() as db:
            older = db.execute("SELECT id, owner_id, group_id, sha1, path FROM images "
                               "WHERE id NOT IN (SELECT image_id FROM image_files)").fetchall()
            for image_id, owner_id, group_id, sha1, folder in older:
                for f in sorted((self.root / folder).glob("*")):
                    if f.name != "annotations.json" and f.is_file():
                        file_id = db.execute(
                            "INSERT INTO files (owner_id, group_id, name, size, sha1, path, namespace, kind) "
                            "VALUES (?, ?, ?, ?, ?, ?, NULL, ?)", (owner_id, group_id, f.name, f.stat().st_size,
                                                                   sha1, f"{folder}/{f.name}", FILESET)).lastrowid
                        db.execute("INSERT INTO image_files VALUES (?, ?)", (image_id, file_id))
                        break

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.root / "store.sqlite", timeout=30, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time: get-or-create cannot race
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    can_create_sessions = True  # the store is the portal's own: no admin account to configure

    def close_session(self, key: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE key = ?", (key,))

    def create_session(self, username: str, ttl_seconds: int) -> str:
        key = secrets.token_urlsafe(32)
        with self._db() as db:
            db.execute("INSERT OR IGNORE INTO users (username) VALUES (?)", (username,))
            (user_id,) = db.execute("SELECT id FROM users WHERE username = ?", (username,)).fetchone()
            for position, group in enumerate(self.groups):
                db.execute("INSERT OR IGNORE INTO groups (name) VALUES (?)", (group,))
                (group_id,) = db.execute("SELECT id FROM groups WHERE name = ?", (group,)).fetchone()
                db.execute("INSERT OR IGNORE INTO members VALUES (?, ?, ?)", (user_id, group_id, position))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (key, user_id, ttl_seconds, time.time()))
        return key

    def _user_for(self, key: str, touch: bool) -> int:
        with self._db() as db:
            row = db.execute("SELECT user_id, ttl, last_used FROM sessions WHERE key = ?", (key,)).fetchone()
            if row is None or time.time() - row[2] > row[1]:
                raise SessionExpired()
            if touch:
                db.execute("UPDATE sessions SET last_used = ? WHERE key = ?", (time.time(), key))
            return row[0]

    def keep_alive(self, key: str) -> bool:
        try:
            self._user_for(key, touch=True)
        except SessionExpired:
            return False
        return True

    @contextmanager
    def session(self, key: str) -> Iterator[EmbeddedSession]:
        yield EmbeddedSession(self, self._user_for(key, touch=True))

    def image_url(self, image_id: int) -> str:
        return f"{self.web_url}/image/{image_id}"

    def images_of(self, username: str) -> list[dict]:
        """The user's images with their place in the tree, for the store's own page."""
        with self._db() as db:
            rows = db.execute(
                "SELECT i.id, i.name, g.name, p.name, d.name, i.sha1, i.path, i.annotations, i.created "
                "FROM images i JOIN users u ON u.id = i.owner_id JOIN groups g ON g.id = i.group_id "
                "JOIN datasets d ON d.id = i.dataset_id JOIN projects p ON p.id = d.project_id "
                "WHERE u.username = ? ORDER BY g.name, p.name, d.name, i.id", (username,),
            ).fetchall()
            files = db.execute(
                "SELECT l.image_id, f.id, f.name, f.size, f.sha1, f.kind FROM image_files l JOIN files f ON f.id = l.file_id "
                "JOIN users u ON u.id = f.owner_id WHERE u.username = ? ORDER BY f.id", (username,),
            ).fetchall()
        keys = ("id", "name", "group", "project", "dataset", "sha1", "path", "annotations", "created")
        images = [dict(zip(keys, row[:7] + (json.loads(row[7]), row[8])), files=[]) for row in rows]
        by_id = {image["id"]: image for image in images}
        for image_id, *stored in files:
            if image_id in by_id:
                by_id[image_id]["files"].append(StoredFile(*stored))
        return images

    def file_of(self, username: str, file_id: int) -> tuple[Path, str] | None:
        """The path and name of one of the user's stored files, for the store's own page to serve."""
        with self._db() as db:
            row = db.execute("SELECT f.path, f.name FROM files f JOIN users u ON u.id = f.owner_id "
                             "WHERE f.id = ? AND u.username = ?", (file_id, username)).fetchone()
        return (self.root / row[0], row[1]) if row else None


class EmbeddedSession:
    def __init__(self, store: EmbeddedGateway, user_id: int):
        self.store = store
        self.user_id = user_id

    def whoami(self) -> Identity:
        with self.store._db() as db:
            (username,) = db.execute("SELECT username FROM users WHERE id = ?", (self.user_id,)).fetchone()
            groups = tuple(Group(gid, name) for gid, name in db.execute(
                "SELECT g.id, g.name FROM members m JOIN groups g ON g.id = m.group_id "
                "WHERE m.user_id = ? ORDER BY m.position", (self.user_id,)))
        return Identity(self.user_id, username, username, groups, groups[0].id if groups else 0)

    def _group_name(self, db: sqlite3.Connection, group_id: int) -> str:
        row = db.execute(
            "SELECT g.name FROM members m JOIN groups g ON g.id = m.group_id WHERE m.user_id = ? AND g.id = ?",
            (self.user_id, group_id)).fetchone()
        if row is None:
            raise PermissionDenied(f"You are not a member of OMERO group {group_id}")
        return row[0]

    def get_or_create_dataset(self, group_id: int, project: str, dataset: str) -> Placement:
        with self.store._db() as db:
            self._group_name(db, group_id)
            db.execute("INSERT OR IGNORE INTO projects (group_id, owner_id, name) VALUES (?, ?, ?)",
                       (group_id, self.user_id, project))
            (project_id,) = db.execute("SELECT id FROM projects WHERE group_id = ? AND owner_id = ? AND name = ?",
                                       (group_id, self.user_id, project)).fetchone()
            db.execute("INSERT OR IGNORE INTO datasets (project_id, name) VALUES (?, ?)", (project_id, dataset))
            (dataset_id,) = db.execute("SELECT id FROM datasets WHERE project_id = ? AND name = ?",
                                       (project_id, dataset)).fetchone()
        return Placement(project_id, project, dataset_id, dataset)

    def find_images(self, group_id: int | None, content_sha1: str) -> list[ImageRef]:
        return self._refs("(i.sha1 = ? OR i.content_sha1 = ?)" + (" AND i.group_id = ?" if group_id is not None else ""),
                          (content_sha1, content_sha1) + ((group_id,) if group_id is not None else ()))

    def _refs(self, where: str, params: tuple) -> list[ImageRef]:
        """The user's images matching `where`, described (the lowest image id of a folder names its fileset)."""
        with self.store._db() as db:
            rows = db.execute(
                "SELECT i.id, i.name, i.sha1, i.job_uid, json_extract(i.annotations, ?) IS NOT NULL, "
                f"(SELECT MIN(j.id) FROM images j WHERE j.path = i.path) FROM images i WHERE i.owner_id = ? AND {where} "
                "ORDER BY i.id", (_COMPLETE, self.user_id, *params)).fetchall()
        return [ImageRef(i, name, self.store.image_url(i), sha1, job_uid, bool(complete), fileset)
                for i, name, sha1, job_uid, complete, fileset in rows]

    def mark_complete(self, group_id: int, image_ids: Sequence[int]) -> None:
        marks = ",".join("?" * len(image_ids))
        with self.store._db() as db:
            self._group_name(db, group_id)
            rows = db.execute(f"SELECT id, path FROM images WHERE owner_id = ? AND group_id = ? AND id IN ({marks})",
                              (self.user_id, group_id, *image_ids)).fetchall()
            if len(rows) != len(set(image_ids)):
                raise PermissionDenied(f"Images {sorted(set(image_ids) - {i for i, _ in rows})} are not yours in this group")
            db.execute(f"UPDATE images SET annotations = json_set(annotations, ?, ?) WHERE id IN ({marks})",
                       (_COMPLETE, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), *image_ids))
            kept = dict(db.execute(f"SELECT path, annotations FROM images WHERE id IN ({marks})", tuple(image_ids)))
        for path, text in kept.items():  # the folder's annotations.json says it too
            (self.store.root / path / "annotations.json").write_text(
                json.dumps(json.loads(text), indent=2, ensure_ascii=False))

    def content_sizes(self, sizes: Collection[int]) -> set[int]:
        wanted = sorted({int(s) for s in sizes})
        if not wanted:
            return set()
        marks = ",".join("?" * len(wanted))
        with self.store._db() as db:
            in_filesets = db.execute(f"SELECT DISTINCT size FROM files WHERE owner_id = ? AND kind = ? AND size IN ({marks})",
                                     (self.user_id, FILESET, *wanted)).fetchall()
            # provenance values are text, as in OMERO's map annotations
            by_source = db.execute(
                f"SELECT DISTINCT CAST(json_extract(annotations, ?) AS INTEGER) AS n FROM images "
                f"WHERE owner_id = ? AND n IN ({marks})",
                (f'$.maps."{PROVENANCE_NAMESPACE}".content_size', self.user_id, *wanted)).fetchall()
        return {n for (n,) in [*in_filesets, *by_source]}

    def key_values(self, group_id: int, key: str) -> list[str]:
        # The pairs sit in each image's annotations JSON; json_each reads only the user's images of
        # that group (the owner index narrows them), never the whole store.
        with self.store._db() as db:
            self._group_name(db, group_id)
            rows = db.execute(
                "SELECT DISTINCT json_extract(kv.value, '$[1]') AS v FROM images i, json_each(i.annotations, ?) kv "
                "WHERE i.owner_id = ? AND i.group_id = ? AND json_extract(kv.value, '$[0]') = ? "
                "ORDER BY v LIMIT ?",
                (f'$.key_values."{CLIENT_KV_NAMESPACE}"', self.user_id, group_id, key, KEY_VALUES_LIMIT),
            ).fetchall()
        return [value for (value,) in rows]

    def image_tags(self, group_id: int, image_id: int) -> list[str]:
        with self.store._db() as db:
            rows = db.execute(
                "SELECT t.text FROM image_tags it JOIN tags t ON t.id = it.tag_id JOIN images i ON i.id = it.image_id "
                "WHERE i.id = ? AND i.owner_id = ? AND i.group_id = ? ORDER BY t.text",
                (image_id, self.user_id, group_id)).fetchall()
        return [text for (text,) in rows]

    def thumbnail(self, group_id: int, image_id: int, longest_side: int) -> bytes:
        # Made once from the image's file and kept in its folder, as OMERO keeps its thumbnails.
        with self.store._db() as db:
            folder = self.store.root / self._image_folder(db, group_id, image_id)
            row = db.execute("SELECT f.path FROM image_files l JOIN files f ON f.id = l.file_id "
                             "WHERE l.image_id = ? AND f.kind = ? ORDER BY f.id", (image_id, FILESET)).fetchone()
        if row is None:
            raise PermissionDenied(f"Image {image_id} has no file to make a thumbnail of")
        kept = folder / f".thumbnail-{int(longest_side)}.png"
        if not kept.exists():
            try:
                png = png_thumbnail(self.store.root / row[0], longest_side)
            except NoThumbnail as e:
                raise PermissionDenied(str(e)) from None
            incoming = kept.with_name(f".{secrets.token_hex(8)}.png")
            incoming.write_bytes(png)
            os.replace(incoming, kept)  # two requests at once both write whole files; one wins
        return kept.read_bytes()

    def delete_images(self, group_id: int, image_ids: Sequence[int]) -> None:
        # Each fileset is one folder, its images rows; a tag stays in the group's list for reuse.
        marks = ",".join("?" * len(image_ids))
        with self.store._db() as db:
            rows = db.execute(f"SELECT id, path FROM images WHERE owner_id = ? AND group_id = ? AND id IN ({marks})",
                              (self.user_id, group_id, *image_ids)).fetchall()
            found, folders = tuple(i for i, _ in rows), sorted({path for _, path in rows})
            if not found:
                return
            remaining = db.execute(
                f"SELECT id FROM images WHERE path IN ({','.join('?' * len(folders))}) "
                f"AND id NOT IN ({','.join('?' * len(found))}) ORDER BY id", (*folders, *found)).fetchall()
            if remaining:  # as Delete2 does (blitz-delete-rules.xml): a fileset goes whole or not at all
                raise PartOfFileset(f"Images {', '.join(map(str, found))} are part of an import whose images "
                                    f"{', '.join(str(i) for (i,) in remaining)} remain: delete them together")
            found_marks = ",".join("?" * len(found))
            db.execute(f"DELETE FROM image_tags WHERE image_id IN ({found_marks})", found)
            db.execute(f"DELETE FROM images WHERE id IN ({found_marks})", found)
            # the fileset's files and the attachments no other image carries go with their folders
            db.execute(f"DELETE FROM image_files WHERE image_id IN ({found_marks})", found)
            db.execute("DELETE FROM files WHERE owner_id = ? AND id NOT IN (SELECT file_id FROM image_files)",
                       (self.user_id,))
        for path in folders:
            shutil.rmtree(self.store.root / path, ignore_errors=True)

    def delete_unused_filesets(self, group_id: int, sha1: str) -> None:
        """Nothing to do: the store makes an import's fileset and its images in one step."""

    def remove_placement(self, group_id: int, placement: Placement) -> None:
        with self.store._db() as db:
            group = self._group_name(db, group_id)
            if db.execute("SELECT 1 FROM images WHERE dataset_id = ?", (placement.dataset_id,)).fetchone():
                raise OmeroError(f"Dataset {placement.dataset} still holds images: it was not removed")
            db.execute("DELETE FROM datasets WHERE id = ? AND project_id IN (SELECT id FROM projects WHERE "
                       "owner_id = ? AND group_id = ?)", (placement.dataset_id, self.user_id, group_id))
            db.execute("DELETE FROM projects WHERE id = ? AND owner_id = ? AND NOT EXISTS "
                       "(SELECT 1 FROM datasets WHERE project_id = ?)",
                       (placement.project_id, self.user_id, placement.project_id))
        project = self.store.root / "files" / _safe_segment(group) / _safe_segment(placement.project)
        for folder in (project / _safe_segment(placement.dataset), project):
            with suppress(OSError):  # a folder still holding anything stays
                folder.rmdir()

    def server_version(self) -> str:
        return f"embedded store of the OMERO Upload Portal {__version__} (SQLite {sqlite3.sqlite_version})"

    def import_image(
        self, group_id: int, dataset_id: int, files: Sequence[Path], *, name: str, description: str,
        annotations: Annotations, progress: Progress,
    ) -> list[ImageRef]:
        with self.store._db() as db:
            group = self._group_name(db, group_id)
            row = db.execute(
                "SELECT p.name, d.name FROM datasets d JOIN projects p ON p.id = d.project_id "
                "WHERE d.id = ? AND p.owner_id = ? AND p.group_id = ?", (dataset_id, self.user_id, group_id),
            ).fetchone()
        if row is None:
            raise PermissionDenied(f"Dataset {dataset_id} is not yours in group {group}")
        # Copy into a private folder, then move it into the tree in one rename: a crash leaves an
        # orphan folder in incoming/, never a half-written image.
        incoming = self.store.root / "incoming" / secrets.token_hex(8)
        incoming.mkdir()
        total, sent, checksums = sum(Path(f).stat().st_size for f in files), 0, []
        try:
            for path in files:
                sha1, size = _copy_hashing(Path(path), incoming / _safe_segment(Path(path).name),
                                           lambda n: progress(sent + n, total))
                sent += size
                checksums.append(sha1)
            kept = {
                "key_values": {CLIENT_KV_NAMESPACE: annotations.key_values},
                "tags": annotations.tags,
                "maps": {METADATA_NAMESPACE: annotations.metadata, PROVENANCE_NAMESPACE: annotations.provenance},
            }
            (incoming / "annotations.json").write_text(json.dumps(kept, indent=2, ensure_ascii=False))
            folder = self.store.root / "files" / _safe_segment(group) / _safe_segment(row[0]) / _safe_segment(row[1])
            folder.mkdir(parents=True, exist_ok=True)
            final = folder / f"{incoming.name}_{_safe_segment(name)}"
            os.rename(incoming, final)
            incoming_primary = final / _safe_segment(Path(files[0]).name)
        except OSError as e:
            shutil.rmtree(incoming, ignore_errors=True)
            raise OmeroError(f"The embedded store could not take {name}: {e.strerror or e}") from None
        except BaseException:  # stopped half-way (the job was cancelled): no partial copy stays behind
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        folder_in_store = str(final.relative_to(self.store.root))
        with self.store._db() as db:
            image_ids = [db.execute(
                "INSERT INTO images (dataset_id, owner_id, group_id, name, description, sha1, content_sha1, job_uid,"
                " path, annotations, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (dataset_id, self.user_id, group_id, image_name, description, checksums[0],
                 annotations.provenance.get("content_sha1"), annotations.provenance.get("job_uid"),
                 folder_in_store, json.dumps(kept, ensure_ascii=False), time.time()),
            ).lastrowid for image_name in image_names(name, incoming_primary)]
            for path, sha1 in zip(files, checksums):  # the fileset's files, each linked to every image
                name_in_store = _safe_segment(Path(path).name)
                file_id = self._add_file(db, image_ids[0], group_id, name_in_store, Path(path).stat().st_size, sha1,
                                         final.relative_to(self.store.root) / name_in_store, None, FILESET)
                db.executemany("INSERT INTO image_files VALUES (?, ?)", [(i, file_id) for i in image_ids[1:]])
            for text in annotations.tags:
                db.execute("INSERT OR IGNORE INTO tags (group_id, text) VALUES (?, ?)", (group_id, text))
                db.executemany("INSERT OR IGNORE INTO image_tags SELECT ?, id FROM tags WHERE group_id = ? AND text = ?",
                               [(image_id, group_id, text) for image_id in image_ids])
        return self._refs(f"i.id IN ({','.join('?' * len(image_ids))})", tuple(image_ids))

    def _add_file(self, db, image_id: int, group_id: int, name: str, size: int, sha1: str, path: Path,
                  namespace: str | None, kind: str) -> int:
        file_id = db.execute(
            "INSERT INTO files (owner_id, group_id, name, size, sha1, path, namespace, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (self.user_id, group_id, name, size, sha1, str(path), namespace, kind)).lastrowid
        db.execute("INSERT INTO image_files VALUES (?, ?)", (image_id, file_id))
        return file_id

    def _image_folder(self, db, group_id: int, image_id: int) -> Path:
        row = db.execute("SELECT path FROM images WHERE id = ? AND owner_id = ? AND group_id = ?",
                         (image_id, self.user_id, group_id)).fetchone()
        if row is None:
            raise PermissionDenied(f"Image {image_id} is not yours in this group")
        return Path(row[0])

    def attach_files(
        self, group_id: int, image_ids: Sequence[int], files: Sequence[FileToAttach], namespace: str,
        progress: Progress,
    ) -> list[StoredFile]:
        with self.store._db() as db:
            self._group_name(db, group_id)
            folders = [self._image_folder(db, group_id, image_id) for image_id in image_ids]
        # Kept once, beside the first image, in a folder a person recognises; linked to every image.
        folder = folders[0] / ("originals" if namespace == ORIGINAL_NAMESPACE else "attachments")
        total, sent, stored = sum(f.path.stat().st_size for f in files), 0, []
        for f in files:
            incoming = self.store.root / "incoming" / secrets.token_hex(8)
            try:
                sha1, size = _copy_hashing(f.path, incoming, lambda n: progress(sent + n, total))
                (self.store.root / folder).mkdir(parents=True, exist_ok=True)
                target = folder / _safe_segment(f.name)
                if (self.store.root / target).exists():  # a rerun keeps both copies apart
                    target = folder / f"{incoming.name}_{_safe_segment(f.name)}"
                os.rename(incoming, self.store.root / target)
            except OSError as e:
                incoming.unlink(missing_ok=True)
                raise OmeroError(f"The embedded store could not keep {f.name}: {e.strerror or e}") from None
            except BaseException:
                incoming.unlink(missing_ok=True)
                raise
            sent += size
            with self.store._db() as db:
                file_id = self._add_file(db, image_ids[0], group_id, f.name, size, sha1, target, namespace, f.kind)
                db.executemany("INSERT INTO image_files VALUES (?, ?)", [(i, file_id) for i in image_ids[1:]])
            stored.append(StoredFile(file_id, f.name, size, sha1, f.kind))
        return stored

    def stored_files(self, group_id: int | None, image_id: int) -> list[StoredFile]:
        with self.store._db() as db:
            mine = db.execute("SELECT group_id FROM images WHERE id = ? AND owner_id = ?", (image_id, self.user_id)).fetchone()
            if mine is None or group_id not in (None, mine[0]):
                raise PermissionDenied(f"Image {image_id} is not yours in this group")
            rows = db.execute("SELECT f.id, f.name, f.size, f.sha1, f.kind FROM image_files l "
                              "JOIN files f ON f.id = l.file_id WHERE l.image_id = ? ORDER BY f.id", (image_id,)).fetchall()
        return [StoredFile(*row) for row in rows]

    def read_file(self, group_id: int, file_id: int) -> Iterator[bytes]:
        with self.store._db() as db:
            row = db.execute("SELECT path FROM files WHERE id = ? AND owner_id = ? AND group_id = ?",
                             (file_id, self.user_id, group_id)).fetchone()
        if row is None:
            raise PermissionDenied(f"File {file_id} is not yours in this group")
        return iter_files_in_blocks(self.store.root / row[0])


def _copy_hashing(source: Path, target: Path, progress) -> tuple[str, int]:
    """Copy in blocks, hashing on the way (no whole file in memory); return (SHA-1, size).
    Each block is hashed in a thread while it is written: both release the GIL."""
    digest, size, hashing = hashlib.sha1(), 0, None
    with open(target, "wb") as out, ThreadPoolExecutor(1) as hasher:
        for block in iter_files_in_blocks(source, 4 << 20):
            if hashing is not None:
                hashing.result()
            hashing = hasher.submit(digest.update, block)
            out.write(block)
            size += len(block)
            progress(size)
        if hashing is not None:
            hashing.result()
    return digest.hexdigest(), size
