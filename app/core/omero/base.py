"""The OMERO boundary: everything the portal asks of OMERO, and nothing more.

Three implementations stand behind it: the embedded on-disk store (embedded mode), the omero-py
adapter (production), and the tests' strict fake of omero-py under that adapter. One contract suite
runs against all of them.

A `Gateway` is built once per process from settings; `gateway.session(key)` joins a user's OMERO
session for the duration of one task or request, and never kills it on the way out; only
`close_session` ends a session, and only one the portal made.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# Key-values in this namespace stay editable in OMERO.web.
CLIENT_KV_NAMESPACE = "openmicroscopy.org/omero/client/mapAnnotation"
# The portal's own annotations: original metadata and provenance.
METADATA_NAMESPACE = "upload-portal/original-metadata"
PROVENANCE_NAMESPACE = "upload-portal/provenance"
# The provenance key the portal adds once an import's response arrived and its checks passed: the only
# sign of a finished import it trusts. OMERO saves the images, their dataset link and annotations
# before their pixels (ManagedImportRequestI step 0), and Pixels.sha1 reads "Pending..." from then on,
# replaced only when the server computed the planes' statistics (OMEROMetadataStoreClient, pixelData).
COMPLETE_KEY = "import_completed"
# File attachments: each original file of a converted job, and what a conversion wrote beside its
# images (spectra as CSV and PNG). OMERO.web lists both under Attachments.
ORIGINAL_NAMESPACE = "upload-portal/original-file"
ATTACHMENT_NAMESPACE = "upload-portal/attachment"
FILESET = "fileset"  # StoredFile.kind of a file OMERO imported (an image's own fileset entry)
ORIGINAL = "original"  # StoredFile.kind of an original kept as an attachment
# Enough to choose from in a list; a key with more values is typed, not picked.
KEY_VALUES_LIMIT = 500


class OmeroError(Exception):
    """Something OMERO refused or could not do; str(error) is meant for the researcher."""

    transient = False  # True: worth retrying with backoff
    retry_helps = True  # False: the same file fails the same way (the researcher's Retry is offered only when True)


class SessionExpired(OmeroError):
    def __init__(self, message: str = "Your OMERO session has expired: sign in again, then retry"):
        super().__init__(message)


class PermissionDenied(OmeroError):
    pass


class PartOfFileset(OmeroError):
    """Delete2 refuses to delete some images of a fileset while others remain (blitz-delete-rules.xml)."""


class ServerUnreachable(OmeroError):
    transient = True

    def __init__(self, message: str = "The OMERO server cannot be reached right now"):
        super().__init__(message)


@dataclass(frozen=True)
class Group:
    id: int
    name: str


@dataclass(frozen=True)
class Identity:
    user_id: int
    username: str
    full_name: str
    groups: tuple[Group, ...]
    default_group_id: int
    is_admin: bool = False
    email: str = ""


@dataclass(frozen=True)
class Placement:
    project_id: int
    project: str
    dataset_id: int
    dataset: str


@dataclass(frozen=True)
class ImageRef:
    id: int
    name: str
    url: str  # the image in OMERO.web (or the embedded store's page)
    sha1: str  # checksum OMERO holds for the imported file (primary file of the fileset)
    job_uid: str | None = None  # the portal job that imported it, from the provenance annotation
    # The portal marked its import finished (COMPLETE_KEY, see mark_complete). An image without the
    # mark is partial: a failed, cancelled or cut-short import, or one whose checks did not pass.
    complete: bool = False
    # The fileset the import made: one import of a multi-series file (each scene of a CZI, each
    # series of an OME-TIFF) makes one image per series, all in one fileset, kept and deleted together.
    fileset_id: int | None = None


@dataclass
class Annotations:
    key_values: list[tuple[str, str]] = field(default_factory=list)  # one MapAnnotation, client ns
    tags: list[str] = field(default_factory=list)  # TagAnnotations, reused when the text exists
    metadata: dict[str, str] = field(default_factory=dict)  # original metadata, METADATA_NAMESPACE
    provenance: dict[str, str] = field(default_factory=dict)  # PROVENANCE_NAMESPACE; has
    # "content_sha1" (what duplicates are found by) and "job_uid" (what makes a rerun idempotent)


@dataclass(frozen=True)
class FileToAttach:
    path: Path
    name: str  # as the researcher named it
    kind: str  # ORIGINAL, or an attachment kind ("spectrum-csv", "spectrum-plot")


@dataclass(frozen=True)
class StoredFile:
    """A file OMERO holds for an image: its fileset entry, or a file attachment."""

    id: int  # the OriginalFile id, what read_file takes
    name: str
    size: int
    sha1: str  # the hash OMERO itself computed and stores (hasher SHA1-160)
    kind: str  # FILESET, ORIGINAL, or the attachment's kind


Progress = Callable[[int, int], None]  # (bytes sent, bytes total)


class Session(Protocol):
    def whoami(self) -> Identity: ...

    def get_or_create_dataset(self, group_id: int, project: str, dataset: str) -> Placement:
        """The user's Project and, linked under it, Dataset of these names; one each, even in a race."""

    def find_images(self, group_id: int | None, content_sha1: str) -> list[ImageRef]:
        """The user's images with this content: an original file with this SHA-1, or a portal
        provenance annotation with this content_sha1. group_id None searches all the user's groups."""

    def content_sizes(self, sizes: Collection[int]) -> set[int]:
        """Of these byte counts, those of content the user holds in any of their groups: a fileset
        file of that size, or a portal import whose source files (provenance content_size) were that
        many bytes. A copy has the size of what it copies: content of a size not returned cannot be
        found by find_images, so it is sent without being hashed first."""

    def import_image(
        self, group_id: int, dataset_id: int, files: Sequence[Path], *, name: str, description: str,
        annotations: Annotations, progress: Progress,
    ) -> list[ImageRef]:
        """Import one fileset into the dataset, annotated, and return the images it made: one per
        series of the file (named "<name> [<series>]" when there are several), none of them complete
        until mark_complete."""

    def mark_complete(self, group_id: int, image_ids: Sequence[int]) -> None:
        """Add COMPLETE_KEY to the provenance annotation of these images (those of one import, whose
        response arrived and whose checksums matched): from then on they are complete."""

    def key_values(self, group_id: int, key: str) -> list[str]:
        """The values the user already gave this key in the group (client-namespace MapAnnotations),
        distinct and sorted, at most KEY_VALUES_LIMIT. Raises PermissionDenied for a non-member."""

    def attach_files(
        self, group_id: int, image_ids: Sequence[int], files: Sequence[FileToAttach], namespace: str,
        progress: Progress,
    ) -> list[StoredFile]:
        """Store each file in OMERO, streamed in blocks, as a FileAnnotation in `namespace` linked to
        every one of the images; return them as OMERO holds them (its own SHA-1)."""

    def stored_files(self, group_id: int | None, image_id: int) -> list[StoredFile]:
        """The image's fileset files and the files attached to it in the portal's namespaces
        (group_id None: the image may be in any of the user's groups)."""

    def read_file(self, group_id: int, file_id: int) -> Iterator[bytes]:
        """The bytes of one of the user's stored files, in blocks (PermissionDenied if not theirs)."""

    def image_tags(self, group_id: int, image_id: int) -> list[str]:
        """The texts of the tags on one of the user's images, sorted."""

    def thumbnail(self, group_id: int, image_id: int, longest_side: int) -> bytes:
        """A small picture (JPEG or PNG bytes) of one of the user's images, as OMERO renders it, its
        longest side `longest_side` pixels (PermissionDenied if not theirs or OMERO has none)."""

    def delete_images(self, group_id: int, image_ids: Sequence[int]) -> None:
        """Remove these images of the user's and what their import made: fileset, original files,
        annotation links, and the annotations nothing else uses (a tag other images carry stays).
        Raises PartOfFileset, removing nothing, when they are some but not all of a fileset's images."""

    def delete_unused_filesets(self, group_id: int, sha1: str) -> None:
        """Remove the user's filesets that hold a file with this SHA-1 and that no image uses: what an
        import the server refused before saving its images leaves behind, with its original files."""

    def remove_placement(self, group_id: int, placement: Placement) -> None:
        """Remove this Dataset, and its Project when nothing else is in it (both must be empty)."""

    def server_version(self) -> str:
        """What the server says it is, for the self-check."""


class Gateway(Protocol):
    def session(self, key: str) -> AbstractContextManager[Session]:
        """Join the OMERO session with this key (raises SessionExpired when it is gone)."""

    @property
    def can_create_sessions(self) -> bool:
        """Whether create_session can work: an admin connection is configured (or not needed)."""

    def create_session(self, username: str, ttl_seconds: int) -> str:
        """A new session key for the named user, made with the configured admin connection."""

    def close_session(self, key: str) -> None:
        """End a session the portal itself made (create_session), for everyone; a gone one is fine.
        Never called with a key the user pasted: that session is theirs and OMERO.web's."""

    def keep_alive(self, key: str) -> bool:
        """Touch the session so it does not idle out while jobs wait; False when it is gone."""


def missing_files(session: Session, group_id: int | None, files: Sequence[tuple[str, str]],
                  images: Sequence[ImageRef]) -> list[str]:
    """The names of these (name, SHA-1) files that OMERO does not hold with the same SHA-1, as a
    fileset entry or a kept original of one of the images; read from OMERO itself."""
    held = {f.sha1 for image in images for f in session.stored_files(group_id, image.id) if f.kind in (FILESET, ORIGINAL)}
    return [name for name, sha1 in files if sha1 not in held]


def one_import(images: Sequence[ImageRef], first: ImageRef) -> list[ImageRef]:
    """Of these images, those `first`'s import made: its job's (a converted file's images are several
    imports) or, for an image the portal did not import, its fileset's."""
    if first.job_uid:
        return [i for i in images if i.job_uid == first.job_uid]
    return [i for i in images if i.id == first.id or (first.fileset_id is not None and i.fileset_id == first.fileset_id)]


def iter_files_in_blocks(path: Path, block: int = 1 << 20) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(block):
            yield chunk
