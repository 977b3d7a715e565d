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


def test_mrc_alone_is_a_job_of_its_own():
    assert summary(["grid.mrc", "stack.mrcs"]) == [("single", ["grid.mrc"], False), ("single", ["stack.mrcs"], False)]


def test_direct_electron_info_goes_with_its_movie_only():
    names = ["20250429_06699_0_movie.mrc", "20250429_06699_1_HAADF_sum.mrc", "20250429_06699_final.mrc",
             "20250429_06699_info.txt", "Custom_info.txt", "Custom_movie.mrc"]
    assert summary(sorted(names)) == [
        ("mrc_xml", ["20250429_06699_0_movie.mrc", "20250429_06699_info.txt"], False),
        ("single", ["20250429_06699_1_HAADF_sum.mrc"], False),  # its own image: a file is in one job
        ("single", ["20250429_06699_final.mrc"], False),
        ("mrc_xml", ["Custom_movie.mrc", "Custom_info.txt"], False),
    ]


def test_direct_electron_info_without_its_movie():
    (chosen,) = group_files(["Custom_info.txt"])
    # both names a DE movie takes (Custom_1_movie.mrc: a numbered one, as DE's server writes them)
    assert chosen.error == ("Custom_info.txt: files .txt are not supported on their own, only as the metadata beside "
                            "an image (Custom_movie.mrc or Custom_1_movie.mrc or Custom_info.tif in the same folder)"
                            )  # a .txt is also a JEOL/Hitachi SEM TIFF's sidecar
    (in_folder,) = group_files(["session/Custom_info.txt"], skip_unread=True)
    assert in_folder.skipped and not in_folder.error


def test_spectra_are_read_on_their_own():
    names = ["map.bcf", "spot.spx", "spot.spc", "spot.msa", "spot.emsa"]
    assert summary(names) == [("single", [name], False) for name in names]


@pytest.mark.parametrize("names, needle", [
    (["lonely_1.ser"], "lonely.emi"),
    (["odd.ser"], ".emi"),
    (["acq.emi"], "acq_1.ser"),
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
