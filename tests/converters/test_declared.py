"""Each format plugin declares its name, suffixes, partners, sidecars and help line once, as literals
that the light client reads without importing the plugin; grouping, the help page and the README use them."""
import textwrap

import pytest

from converters import declared, formats, group_files, registry
from tests.helpers import ROOT


def test_the_declarations_read_from_source_are_the_plugins_own_constants():
    imported = {p.__name__.rsplit(".", 1)[1]: p for p in registry.plugins()}
    read = {f.module: f for f in declared.formats()}
    assert read.keys() == imported.keys()
    for module, plugin in imported.items():
        f = read[module]
        assert (f.name, f.extensions, f.priority) == (plugin.NAME, plugin.EXTENSIONS, getattr(plugin, "PRIORITY", 50))
        assert f.help == getattr(plugin, "HELP", None)
    assert [f.module for f in declared.formats()] == [p.__name__.rsplit(".", 1)[1] for p in registry.plugins()]


def test_every_format_a_researcher_sends_has_a_help_line():
    # a plugin without one only explains what is missing (a SER or an EPU XML alone): each of its
    # suffixes is another's partner, so a plugin that forgot its HELP cannot go unread unseen
    partners = declared.partner_suffixes()
    assert all(set(f.extensions) <= partners for f in declared.formats() if not f.help)
    assert {f.name for f in declared.formats()} - {f.name for f in declared.readers()} == {"TIA SER", "ATLAS/EPU XML", "Direct Electron info"}
    # a suffix both a partner and a reader's own: an .spc with its .spd map, or a spectrum alone
    assert ".spc" in partners and ".spc" in declared.primary_suffixes() and ".ser" not in declared.primary_suffixes()


def test_the_readme_table_is_the_declarations():
    assert declared.markdown_table() in (ROOT / "README.md").read_text(), "paste `python -m converters.declared`"


def test_not_supported_lists_what_is():
    (group,) = group_files(["notes.docx"])
    for f in declared.readers():
        assert all(e in group.error for e in f.extensions), f.name
    assert ".emi with .ser" in group.error


@pytest.fixture
def new_format(tmp_path, monkeypatch):
    """A plugin dropped beside the others: a SEM TIFF-like format with an optional same-stem .txt, and a
    movie whose metadata file is named from a prefix of its name."""
    (tmp_path / "pgm_sem.py").write_text(textwrap.dedent('''
        NAME = "PGM SEM"
        EXTENSIONS = (".pgm",)
        HELP = "portable grey maps with the SEM's text beside them"
        SIDECARS = ({"name": "{stem}.txt", "what": "SEM metadata"},)
        def identify(head, path):
            return head.startswith(b"P5")
        def read(files, options):
            raise NotImplementedError
    '''))
    (tmp_path / "movie.py").write_text(textwrap.dedent('''
        import numpy  # a plugin imports what it likes: its declarations are still read as text
        NAME, EXTENSIONS, HELP = "Movie", (".mov5",), "movies with their info"
        SIDECARS = ({"primary": "{prefix}_movie.mov5", "name": "{prefix}_info.txt", "what": "info file",
                     "required": True},)
        def identify(head, path):
            return False
        def read(files, options):
            raise NotImplementedError
    '''))
    monkeypatch.setattr(formats, "__path__", [*formats.__path__, str(tmp_path)])
    declared.formats.cache_clear()
    yield
    declared.formats.cache_clear()


def test_a_new_format_s_sidecar_is_grouped_when_present_and_optional_when_not(new_format):
    groups = group_files(["a.pgm", "b.pgm", "A.TXT", "x/c_movie.mov5", "x/c_info.txt", "x/d_movie.mov5"])
    assert [(g.files, g.kind, g.error) for g in groups] == [
        (["a.pgm", "A.TXT"], "pgm_sem", None),
        (["b.pgm"], "single", None),  # optional: no error without it
        (["x/c_movie.mov5", "x/c_info.txt"], "movie", None),
        (["x/d_movie.mov5"], "movie", "d_movie.mov5 needs its info file d_info.txt beside it"),
    ]
    assert ".pgm" in group_files(["notes.docx"])[0].error


def test_a_sidecar_alone_is_named_with_its_image_or_skipped_in_a_folder(new_format):
    [alone] = group_files(["e_info.txt"])
    # the MRC plugin's Direct Electron rules name their movies too (a real DE info file is named so)
    assert alone.error == ("e_info.txt: files .txt are not supported on their own, only as the metadata beside an "
                           "image (e_movie.mov5 or e_<image>.mrc or e_info.pgm or e_info.tif in the same folder)")
    [in_folder] = group_files(["run/notes.txt"], skip_unread=True)
    assert in_folder.error is None and in_folder.skipped == ".txt files"


def test_a_partner_alone_is_an_error_even_in_a_folder():
    [ser] = group_files(["run/t_1.ser"], skip_unread=True)
    assert ser.skipped is None and ser.error == "t_1.ser needs its t.emi in the same folder"


@pytest.mark.parametrize("declarations, message", [
    ('NAME, EXTENSIONS = "Bad", (".bad",)\nHELP = "a" + str(1)\n', r"^bad\.py: HELP must be a plain literal"),
    ('NAME, EXTENSIONS, HELP = "Bad", (".bad",), "x"\n'
     'PARTNERS = ({"name": "{stem}.dat", "what": "data", "shared": True},)\n', r"^bad\.py: only a sidecar can be shared"),
])
def test_a_declaration_the_registry_cannot_use_is_refused_by_name(tmp_path, monkeypatch, declarations, message):
    (tmp_path / "bad.py").write_text(declarations + 'def identify(head, path): ...\ndef read(files, options): ...\n')
    monkeypatch.setattr(formats, "__path__", [*formats.__path__, str(tmp_path)])
    declared.formats.cache_clear()
    try:
        with pytest.raises(ValueError, match=message):
            declared.formats()
    finally:
        declared.formats.cache_clear()
