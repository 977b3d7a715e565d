"""The HQL the omero-py adapter sends, and the small readers of what comes back.

Every query is targeted: it names the user (owner) and the values it looks for, so OMERO answers
from its indexes instead of us scanning a group's objects. The group a query searches is not in the
HQL: it travels with each call as the `omero.group` context (-1 = all the user's groups).
"""
from __future__ import annotations

from omero.rtypes import rlist, rlong, rstring, unwrap
from omero.sys import ParametersI

from app.core.omero.base import CLIENT_KV_NAMESPACE, KEY_VALUES_LIMIT, PROVENANCE_NAMESPACE

SHA1_HASHER = "SHA1-160"  # ChecksumAlgorithm value OMERO records for SHA-1 (omero.model.enums)
TAGSET_NAMESPACE = "openmicroscopy.org/omero/insight/tagset"  # tag sets are not tags

# The user's projects of this name, oldest first (get-or-create keeps the oldest).
PROJECTS_BY_NAME = (
    "select p from Project p where p.name = :name and p.details.owner.id = :owner order by p.id"
)

# The user's datasets of this name linked under this project, oldest dataset first.
DATASET_LINKS_BY_NAME = (
    "select l from ProjectDatasetLink l join fetch l.child d "
    "where l.parent.id = :pid and d.name = :name and d.details.owner.id = :owner order by d.id, l.id"
)

# Ids of images whose fileset holds an original file with this SHA-1 (Image -> fileset -> usedFiles
# -> originalFile -> hasher). The two id queries are projections: as omero-py's own
# getObjectsByMapAnnotations notes, loading objects while filtering on mapValue does not work.
IMAGES_BY_FILE_SHA1 = (
    "select distinct i.id from Image i join i.fileset fs join fs.usedFiles fe join fe.originalFile f "
    "join f.hasher h where f.hash = :sha1 and h.value = :hasher and i.details.owner.id = :owner"
)

# Ids of images the portal annotated with this content SHA-1 (e.g. converted from a file with it).
IMAGES_BY_PROVENANCE_SHA1 = (
    "select distinct i.id from Image i join i.annotationLinks l join l.child a join a.mapValue mv "
    "where a.ns = :ns and mv.name = :key and mv.value = :sha1 and i.details.owner.id = :owner"
)

# Which of these sizes a file in the fileset of one of the user's images has (the duplicate check's
# first sieve: a copy has the size of what it copies).
FILESET_FILE_SIZES = (
    "select distinct f.size from Image i join i.fileset fs join fs.usedFiles fe join fe.originalFile f "
    "where f.size in (:sizes) and i.details.owner.id = :owner"
)

# Which of these sizes (as text, as map values are) the source of one of the user's portal imports had.
PROVENANCE_CONTENT_SIZES = (
    "select distinct mv.value from Image i join i.annotationLinks l join l.child a join a.mapValue mv "
    "where a.ns = :ns and mv.name = :key and mv.value in (:sizes) and i.details.owner.id = :owner"
)

# The images with their fileset's files (and their hashes), to describe what we found or made.
IMAGES_WITH_FILES = (
    "select distinct i from Image i left outer join fetch i.fileset fs "
    "left outer join fetch fs.usedFiles fe left outer join fetch fe.originalFile f "
    "left outer join fetch f.hasher where i.id in (:ids)"
)

# The user's filesets holding a file with this SHA-1 that no image uses: what an import the server
# gave up on before saving its images (ManagedImportRequestI step 0) leaves in the managed repository.
UNUSED_FILESETS_BY_SHA1 = (
    "select distinct fs.id from Fileset fs join fs.usedFiles fe join fe.originalFile f join f.hasher h "
    "where f.hash = :sha1 and h.value = :hasher and fs.details.owner.id = :owner "
    "and not exists (select i.id from Image i where i.fileset.id = fs.id)"
)

# Every image of the filesets of these images, with its fileset: what one import made of each.
FILESET_IMAGES = (
    "select i.id, i.fileset.id from Image i where i.fileset.id in "
    "(select j.fileset.id from Image j where j.id in (:ids)) order by i.id"
)

# The portal's provenance annotations on these images.
PROVENANCE_LINKS = (
    "select l from ImageAnnotationLink l join fetch l.child a "
    "where l.parent.id in (:ids) and a.ns = :ns order by l.id"
)

# Tags with exactly this text in the call's group; the caller prefers its own.
TAGS_BY_TEXT = (
    "select t from TagAnnotation t where t.textValue = :text "
    "and (t.ns is null or t.ns != :tagset) order by t.id"
)

# The texts of the tags linked to one image (a projection: only the strings travel).
IMAGE_TAGS = (
    "select t.textValue from ImageAnnotationLink l, TagAnnotation t "
    "where l.child.id = t.id and l.parent.id = :iid and l.parent.details.owner.id = :owner order by t.textValue"
)

# The primary pixels of one of the user's images: what OMERO's ThumbnailStore renders.
IMAGE_PIXELS = "select p.id from Pixels p where p.image.id = :iid and p.image.details.owner.id = :owner"

# The distinct values the user gave this key in editable (client namespace) key-value annotations of
# the call's group. A projection, like the id queries above: only the strings travel.
KEY_VALUES = (
    "select distinct mv.value from MapAnnotation a join a.mapValue mv "
    "where a.ns = :ns and mv.name = :key and a.details.owner.id = :owner order by mv.value"
)


def projects_params(name: str, owner: int) -> ParametersI:
    return ParametersI().addString("name", name).addLong("owner", owner)


def dataset_links_params(project_id: int, name: str, owner: int) -> ParametersI:
    return ParametersI().addLong("pid", project_id).addString("name", name).addLong("owner", owner)


def file_sha1_params(sha1: str, owner: int) -> ParametersI:
    return ParametersI().addString("sha1", sha1).addString("hasher", SHA1_HASHER).addLong("owner", owner)


def provenance_sha1_params(sha1: str, owner: int) -> ParametersI:
    return (
        ParametersI().addString("ns", PROVENANCE_NAMESPACE).addString("key", "content_sha1")
        .addString("sha1", sha1).addLong("owner", owner)
    )


def sizes_params(sizes: list[int], owner: int) -> ParametersI:
    return ParametersI().add("sizes", rlist([rlong(s) for s in sizes])).addLong("owner", owner)


def provenance_sizes_params(sizes: list[int], owner: int) -> ParametersI:
    return (
        ParametersI().addString("ns", PROVENANCE_NAMESPACE).addString("key", "content_size")
        .add("sizes", rlist([rstring(str(s)) for s in sizes])).addLong("owner", owner)
    )


def key_values_params(key: str, owner: int) -> ParametersI:
    params = ParametersI().addString("ns", CLIENT_KV_NAMESPACE).addString("key", key).addLong("owner", owner)
    return params.page(0, KEY_VALUES_LIMIT)


def image_tags_params(image_id: int, owner: int) -> ParametersI:
    return ParametersI().addLong("iid", image_id).addLong("owner", owner)


def ids_params(ids: list[int]) -> ParametersI:
    return ParametersI().addIds(ids)


def provenance_links_params(ids: list[int]) -> ParametersI:
    return ParametersI().addIds(ids).addString("ns", PROVENANCE_NAMESPACE)


def tags_params(text: str) -> ParametersI:
    return ParametersI().addString("text", text).addString("tagset", TAGSET_NAMESPACE)


def primary_sha1(image) -> str:
    """SHA-1 OMERO holds for the image's primary file, the first entry of its fileset ("" if none)."""
    fileset = image.getFileset()
    if fileset is None or not fileset.isLoaded() or not fileset.isUsedFilesLoaded():
        return ""
    entries = sorted(fileset.copyUsedFiles(), key=lambda fe: fe.getId().getValue())
    if not entries:
        return ""
    f = entries[0].getOriginalFile()
    hasher = f.getHasher()
    if hasher is None or unwrap(hasher.getValue()) != SHA1_HASHER:
        return ""  # hashed with another algorithm: not comparable with our SHA-1s
    return unwrap(f.getHash()) or ""


def map_value(annotation) -> dict[str, str]:
    """A MapAnnotation's pairs as a dict (the first value wins for a repeated key)."""
    pairs: dict[str, str] = {}
    for nv in annotation.getMapValue() or []:
        pairs.setdefault(nv.name, nv.value)
    return pairs


# The files of an image's fileset, as projections: (id, name, size, hash, hasher).
FILESET_FILES = (
    "select f.id, f.name, f.size, f.hash, h.value from Image i join i.fileset fs join fs.usedFiles fe "
    "join fe.originalFile f left outer join f.hasher h where i.id = :iid order by fe.id"
)

# The files attached to an image in the portal's namespaces: (id, name, size, hash, hasher, ns, description).
ATTACHED_FILES = (
    "select f.id, f.name, f.size, f.hash, h.value, a.ns, a.description from FileAnnotation a join a.file f "
    "left outer join f.hasher h where a.ns in (:ns) "
    "and a.id in (select l.child.id from ImageAnnotationLink l where l.parent.id = :iid) order by f.id"
)


def image_params(image_id: int) -> ParametersI:
    return ParametersI().addLong("iid", image_id)


def attached_params(image_id: int, namespaces: list[str]) -> ParametersI:
    return ParametersI().addLong("iid", image_id).add("ns", rlist([rstring(ns) for ns in namespaces]))
