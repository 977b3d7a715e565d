"""The fake IQuery: answers the adapter's HQL from the in-memory model, and nothing else.

Each query the adapter may send has a handler here implementing what that HQL means on a real
server (owner, group, hasher and namespace filters included). The named parameters a call passes
must be exactly the `:names` in its HQL, as Hibernate demands. Any other query fails loudly: the
adapter must not grow unnoticed queries (like listing every tag).
"""
from __future__ import annotations

import re
from unittest import mock

import omero
import omero.constants.permissions as ocp
from omero.model import (
    ChecksumAlgorithmI, DatasetI, ExperimenterGroupI, ExperimenterI, FilesetEntryI, FilesetI, ImageAnnotationLinkI,
    ImageI, MapAnnotationI, NamedValue, OriginalFileI, PermissionsI, ProjectDatasetLinkI, ProjectI, TagAnnotationI,
)
from omero.rtypes import rlong, rstring, unwrap

from app.core.omero import omeropy_queries as q

from .fake_omero_model import Row, Store, User


def with_details(obj, row: Row, store: Store, viewer: User):
    """Owner, group and the permissions (with the viewer's restrictions) a real server sends."""
    details = obj.getDetails()
    details.setOwner(ExperimenterI(row.owner, False))
    details.setGroup(ExperimenterGroupI(row.group, False))
    group_perms = store.groups[row.group].perms
    perms = PermissionsI(group_perms)
    mine = row.owner == viewer.id
    restrictions = [False] * 6
    # Others' objects may be linked to only in read-annotate or read-write groups.
    restrictions[ocp.LINKRESTRICTION] = not (mine or group_perms[2:4] in ("ra", "rw"))
    perms._restrictions = restrictions
    details.setPermissions(perms)
    return obj


def project(row, store, viewer):
    p = ProjectI(row.id, True)
    p.setName(rstring(row.fields["name"]))
    return with_details(p, row, store, viewer)


def dataset(row, store, viewer):
    d = DatasetI(row.id, True)
    d.setName(rstring(row.fields["name"]))
    return with_details(d, row, store, viewer)


def image(row, store, viewer, *, with_files=False):
    i = ImageI(row.id, True)
    i.setName(rstring(row.fields["name"]))
    i.setDescription(rstring(row.fields["description"]))
    fs_id = row.fields["fileset"]
    if not with_files:
        i.setFileset(FilesetI(fs_id, False))
        return with_details(i, row, store, viewer)
    fs = FilesetI(fs_id, True)
    for entry_row in store.select("entry", fileset=fs_id):
        file_row = store.rows[entry_row.fields["file"]]
        f = OriginalFileI(file_row.id, True)
        f.setName(rstring(file_row.fields["name"]))
        if file_row.fields["hash"] is not None:  # hashed when its uploader was closed
            f.setHash(rstring(file_row.fields["hash"]))
        hasher = ChecksumAlgorithmI(file_row.fields["hasher_id"], True)
        hasher.setValue(rstring(file_row.fields["hasher"]))
        f.setHasher(hasher)
        entry = FilesetEntryI(entry_row.id, True)
        entry.setOriginalFile(f)
        entry.setClientPath(rstring(entry_row.fields["client_path"]))
        fs.addFilesetEntry(entry)
    i.setFileset(fs)
    return with_details(i, row, store, viewer)


def annotation(row, store, viewer):
    if row.kind == "tag":
        a = TagAnnotationI(row.id, True)
        a.setTextValue(rstring(row.fields["text"]))
    else:
        a = MapAnnotationI(row.id, True)
        a.setMapValue([NamedValue(k, v) for k, v in row.fields["pairs"]])
    a.setNs(rstring(row.fields["ns"]) if row.fields["ns"] is not None else None)
    return with_details(a, row, store, viewer)


class FakeQuery:
    """IQueryPrx.findAllByQuery and .projection for the adapter's HQL."""

    def __init__(self, store: Store, user: User, log: list):
        self.store, self.user, self.log = store, user, log
        self.handlers = {
            q.PROJECTS_BY_NAME: self._projects,
            q.DATASET_LINKS_BY_NAME: self._dataset_links,
            q.IMAGES_WITH_FILES: self._images_with_files,
            q.PROVENANCE_LINKS: self._provenance_links,
            q.TAGS_BY_TEXT: self._tags,
        }
        self.projections = {
            q.IMAGES_BY_FILE_SHA1: self._images_by_file,
            q.IMAGES_BY_PROVENANCE_SHA1: self._images_by_provenance,
            q.KEY_VALUES: self._key_values,
            q.FILESET_IMAGES: self._fileset_images,
            q.UNUSED_FILESETS_BY_SHA1: self._unused_filesets,
            q.IMAGE_TAGS: self._image_tags,
            q.IMAGE_PIXELS: self._image_pixels,
            q.FILESET_FILE_SIZES: self._fileset_file_sizes,
            q.PROVENANCE_CONTENT_SIZES: self._provenance_content_sizes,
        }

    def findAllByQuery(self, query, params, _ctx=None):
        return self._run("findAllByQuery", self.handlers, query, params, _ctx)

    def projection(self, query, params, _ctx=None):
        return self._run("projection", self.projections, query, params, _ctx)

    def _run(self, method, handlers, query, params, _ctx):
        handler = handlers.get(query)
        if handler is None:
            raise omero.QueryException(None, None, f"fake OMERO has no {method} for this query: {query}")
        names = set(re.findall(r":(\w+)", query))
        given = {k: unwrap(v) for k, v in params.map.items()}
        if set(given) != names:
            raise omero.QueryException(None, None, f"parameters {sorted(given)} != {sorted(names)} in {query}")
        self.log.append((f"query.{method}", handler.__name__.lstrip("_"), dict(given), dict(_ctx or {})))
        groups = self.store.groups_in_scope(self.user, _ctx)
        found = handler(groups, **given)
        self.store.meet(handler.__name__.lstrip("_"))
        page = getattr(params, "theFilter", None)
        if page is not None and page.limit is not None:  # ParametersI.page(offset, limit)
            start = unwrap(page.offset) or 0
            found = found[start:start + unwrap(page.limit)]
        return found

    def _projects(self, groups, name, owner):
        return [project(r, self.store, self.user) for r in self.store.select("project", groups, name=name)
                if r.owner == owner]

    def _dataset_links(self, groups, pid, name, owner):
        out = []
        for link in self.store.select("pdlink", groups, parent=pid):
            d = self.store.rows.get(link.fields["child"])
            if d is not None and d.fields["name"] == name and d.owner == owner:
                obj = ProjectDatasetLinkI(link.id, True)
                obj.setParent(ProjectI(pid, False))
                obj.setChild(dataset(d, self.store, self.user))
                out.append(with_details(obj, link, self.store, self.user))
        return sorted(out, key=lambda link: (link.getChild().getId().getValue(), link.getId().getValue()))

    def _image_rows(self, groups, owner):
        return [r for r in self.store.select("image", groups) if r.owner == owner]

    def _images_by_file(self, groups, sha1, hasher, owner):
        out = []
        for img in self._image_rows(groups, owner):
            entries = self.store.select("entry", fileset=img.fields["fileset"])
            files = [self.store.rows[e.fields["file"]] for e in entries]
            if any(f.fields["hash"] == sha1 and f.fields["hasher"] == hasher for f in files):
                out.append([rlong(img.id)])
        return out

    def _images_by_provenance(self, groups, ns, key, sha1, owner):
        out = []
        for img in self._image_rows(groups, owner):
            for link in self.store.select("ialink", parent=img.id):
                ann = self.store.rows[link.fields["child"]]
                if ann.kind == "map" and ann.fields["ns"] == ns and (key, sha1) in ann.fields["pairs"]:
                    out.append([rlong(img.id)])
                    break
        return out

    def _fileset_file_sizes(self, groups, sizes, owner):
        found = set()
        for img in self._image_rows(groups, owner):
            for entry in self.store.select("entry", fileset=img.fields["fileset"]):
                size = self.store.rows[entry.fields["file"]].fields["size"]
                if size in sizes:
                    found.add(size)
        return [[rlong(size)] for size in sorted(found)]

    def _provenance_content_sizes(self, groups, ns, key, sizes, owner):
        found = set()
        for img in self._image_rows(groups, owner):
            for link in self.store.select("ialink", parent=img.id):
                ann = self.store.rows[link.fields["child"]]
                if ann.kind == "map" and ann.fields["ns"] == ns:
                    found |= {value for k, value in ann.fields["pairs"] if k == key and value in sizes}
        return [[rstring(value)] for value in sorted(found)]

    def _key_values(self, groups, ns, key, owner):
        values = {v for r in self.store.select("map", groups) if r.owner == owner and r.fields["ns"] == ns
                  for k, v in r.fields["pairs"] if k == key}
        return [[rstring(v)] for v in sorted(values)]

    def _image_tags(self, groups, iid, owner):
        image = self.store.rows.get(iid)
        if image is None or image.kind != "image" or image.group not in groups or image.owner != owner:
            return []
        linked = [self.store.rows[link.fields["child"]] for link in self.store.select("ialink", parent=iid)]
        return [[rstring(text)] for text in sorted(a.fields["text"] for a in linked if a.kind == "tag")]

    def _unused_filesets(self, groups, sha1, hasher, owner):
        found = set()
        for fs in self.store.select("fileset", groups):
            files = [self.store.rows[e.fields["file"]] for e in self.store.select("entry", fileset=fs.id)]
            if (fs.owner == owner and not self.store.select("image", fileset=fs.id)
                    and any(f.fields["hash"] == sha1 and f.fields["hasher"] == hasher for f in files)):
                found.add(fs.id)
        return [[rlong(i)] for i in sorted(found)]

    def _fileset_images(self, groups, ids):
        filesets = {r.fields["fileset"] for r in self.store.select("image", groups) if r.id in ids}
        return [[rlong(r.id), rlong(r.fields["fileset"])] for r in sorted(self.store.select("image", groups), key=lambda r: r.id)
                if r.fields["fileset"] in filesets]

    def _image_pixels(self, groups, iid, owner):
        return [[rlong(p.id)] for p in self.store.select("pixels", groups, image=iid) if p.owner == owner]

    def _images_with_files(self, groups, ids):
        return [image(r, self.store, self.user, with_files=True)
                for r in self.store.select("image", groups) if r.id in ids]

    def _provenance_links(self, groups, ids, ns):
        out = []
        for link in self.store.select("ialink", groups):
            ann = self.store.rows[link.fields["child"]]
            if link.fields["parent"] in ids and ann.fields["ns"] == ns:
                obj = ImageAnnotationLinkI(link.id, True)
                obj.setParent(ImageI(link.fields["parent"], False))
                obj.setChild(annotation(ann, self.store, self.user))
                out.append(with_details(obj, link, self.store, self.user))
        return out

    def _tags(self, groups, text, tagset):
        return [annotation(r, self.store, self.user) for r in self.store.select("tag", groups, text=text)
                if r.fields["ns"] is None or r.fields["ns"] != tagset]


def strict(cls):
    """A mock with exactly the real class's methods and signatures (spec_set: no invented ones)."""
    return mock.create_autospec(cls, instance=True, spec_set=True)


def rid(obj) -> int | None:
    """The id of a model object, None when it is new."""
    return None if obj.getId() is None else obj.getId().getValue()

