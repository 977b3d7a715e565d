import pytest

from converters import group_files


def summary(names):
    return [(g.kind, g.files, bool(g.error)) for g in group_files(names)]


def test_emi_takes_all_its_ser_files_in_numeric_order_wherever_they_stand():
    names = ["run_10.ser", "run.emi", "run_2.ser", "run_1.ser", "other.emd"]
    assert summary(names) == [
        ("tia", ["run.emi", "run_1.ser", "run_2.ser", "run_10.ser"], False),
        ("single", ["other.emd"], False),
    ]


def test_mrc_pairs_with_its_xml():
    assert summary(["Atlas_1.xml", "Atlas_1.mrc"]) == [("mrc_xml", ["Atlas_1.mrc", "Atlas_1.xml"], False)]


@pytest.mark.parametrize("names, needle", [
    (["lonely_1.ser"], "lonely.emi"),
    (["odd.ser"], ".emi"),
    (["acq.emi"], "acq_1.ser"),
    (["grid.mrc"], "grid.xml"),
    (["grid.xml"], "grid.mrc"),
    (["notes.docx"], ".docx are not supported"),
    (["README"], "without an extension"),
])
def test_incomplete_or_unsupported_groups_say_what_is_missing(names, needle):
    (group,) = group_files(names)
    assert needle in group.error


def test_partners_must_share_a_folder():
    groups = group_files(["a/run.emi", "b/run_1.ser"])
    assert [g.error is not None for g in groups] == [True, True]


def test_extensions_match_case_insensitively_and_duplicates_collapse():
    assert summary(["X.EMI", "X_1.SER", "X_1.SER"]) == [("tia", ["X.EMI", "X_1.SER"], False)]
