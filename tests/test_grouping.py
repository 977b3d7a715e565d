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


def test_direct_electron_info_goes_with_every_mrc_of_its_acquisition():
    names = ["20250429_06699_0_movie.mrc", "20250429_06699_0_Virt #0_total_sum.mrc", "20250429_06699_final.mrc",
             "20250429_06699_info.txt", "20250429_06700_final.mrc", "Custom_info.txt", "Custom_movie.mrc", "grid.mrc"]
    info = "20250429_06699_info.txt"
    assert summary(sorted(names)) == [
        ("mrc_xml", ["20250429_06699_0_Virt #0_total_sum.mrc", info], False),  # each job has its own copy
        ("mrc_xml", ["20250429_06699_0_movie.mrc", info], False),
        ("mrc_xml", ["20250429_06699_final.mrc", info], False),
        ("single", ["20250429_06700_final.mrc"], False),  # another acquisition: its info was not chosen
        ("mrc_xml", ["Custom_movie.mrc", "Custom_info.txt"], False),
        ("single", ["grid.mrc"], False),
    ]


def test_the_most_specific_direct_electron_info_wins_and_a_folder_keeps_them_apart():
    names = ["a/20250429_06699_info.txt", "a/20250429_06699_tilt_info.txt", "a/20250429_06699_tilt_movie.mrc",
             "a/20250429_06699_final.mrc", "b/20250429_06699_0_movie.mrc"]
    assert summary(names) == [
        ("mrc_xml", ["a/20250429_06699_tilt_movie.mrc", "a/20250429_06699_tilt_info.txt"], False),
        ("mrc_xml", ["a/20250429_06699_final.mrc", "a/20250429_06699_info.txt"], False),
        ("single", ["b/20250429_06699_0_movie.mrc"], False),
    ]


def test_direct_electron_info_without_its_movie():
    (chosen,) = group_files(["Custom_info.txt"])
    # any MRC of the acquisition takes it (its movie, _final sum, virtual images)
    assert chosen.error == ("Custom_info.txt: files .txt are not supported on their own, only as the metadata beside "
                            "an image (Custom_<image>.mrc or Custom_info.tif in the same folder)"
                            )  # a .txt is also a JEOL/Hitachi SEM TIFF's sidecar
    (in_folder,) = group_files(["session/Custom_info.txt"], skip_unread=True)
    assert in_folder.skipped and not in_folder.error


def test_a_lone_text_file_is_named_as_the_image_it_could_describe():
    (notes,) = group_files(["notes.txt"])  # no Direct Electron name: only a SEM TIFF's sidecar fits
    assert notes.kind == "tiff" and "notes.tif" in notes.error


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
