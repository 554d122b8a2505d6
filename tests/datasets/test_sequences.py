import pytest

from harness.datasets.errors import DataError
from harness.datasets.sequences import SequenceRules, load_rules


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("t2_tse_tra", "T2WI"),
        ("Ax T2 FRFSE", "T2WI"),
        ("AX FS T2WI", "T2WI"),
        ("t1_vibe_fs_sag_post", "CET1WI"),
        ("Sag T1 FSPGR +C", "CET1WI"),
        ("ep2d_diff_tra_b0_800", "DWI"),
        ("Ax DWI b800", "DWI"),
        ("ep2d_diff_tra_b0_800_ADC", "ADC"),
        ("Apparent Diffusion Coefficient (mm2/s)", "ADC"),
        ("FAST LOCALIZER", None),
        ("t1_tse_tra", None),
    ],
)
def test_default_rules_map_vendor_descriptions(description, expected):
    assert SequenceRules().classify("1.2.3", description) == expected


def test_rules_file_goes_first_and_explicit_uid_wins(tmp_path):
    (tmp_path / "sequences.yaml").write_text(
        "rules:\n  - sequence: CET1WI\n    pattern: 'localizer'\nseries:\n  '9.9.9': ADC\n"
    )
    rules = load_rules(tmp_path)
    assert rules.classify("1.2.3", "FAST LOCALIZER") == "CET1WI"
    assert rules.classify("1.2.3", "t2_tse_tra") == "T2WI"  # defaults still apply after the file's rules
    assert rules.classify("9.9.9", "t2_tse_tra") == "ADC"


def test_replace_defaults(tmp_path):
    (tmp_path / "sequences.yaml").write_text("rules: [{sequence: T2WI, pattern: 'tse'}]\nreplace_defaults: true\n")
    rules = load_rules(tmp_path)
    assert rules.classify("1", "Ax DWI b800") is None
    assert rules.classify("1", "t2_tse_tra") == "T2WI"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("rules: [{sequence: T3WI, pattern: x}]", "unknown sequence 'T3WI'"),
        ("rules: [{sequence: T2WI, pattern: '(('}]", "invalid regular expression"),
        ("rulez: []", "rulez"),
        ("series: {'1.2': FLAIR}", "FLAIR"),
        ("rules: [", "not valid YAML"),
    ],
)
def test_bad_rules_file_names_file_and_key(tmp_path, text, fragment):
    (tmp_path / "sequences.yaml").write_text(text)
    with pytest.raises(DataError) as info:
        load_rules(tmp_path)
    assert "sequences.yaml" in str(info.value)
    assert fragment in str(info.value)
