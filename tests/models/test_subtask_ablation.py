import pytest

from geomamba.models.change._subtask_ablation import (
    DECODER_VARIANTS,
    DIFFERENCE_VARIANTS,
    ENCODER_VARIANTS,
    SubtaskAblation,
    resolve_ablation,
)


@pytest.mark.parametrize(
    ("code", "version"),
    [
        ("0 0 0", "en_sicnn_inmlp-de_ca_sa-di_so_fo_m"),
        ("0 1 0", "en_sicnn_inmlp-de-di_so_fo_m"),
        ("0 2 0", "en_sicnn_inmlp-de_ca-di_so_fo_m"),
        ("0 3 0", "en_sicnn_inmlp-de_sa-di_so_fo_m"),
        ("1 0 0", "en_sicnn_simlp-de_ca_sa-di_so_fo_m"),
        ("2 0 0", "en_incnn_inmlp-de_ca_sa-di_so_fo_m"),
        ("3 0 0", "en_sicnn_inmlp-de_ca_sa-di_so_fo_m"),
        ("0 0 1", "en_sicnn_inmlp-de_ca_sa-di_so_fo"),
        ("0 0 2", "en_sicnn_inmlp-de_ca_sa-di_fo_m"),
        ("0 0 3", "en_sicnn_inmlp-de_ca_sa-di_so_m"),
        ("0 0 4", "en_sicnn_inmlp-de_ca_sa-di_m"),
    ],
)
def test_codes_and_versions_resolve_to_the_same_switches(code, version):
    by_code = SubtaskAblation.from_code(code)
    assert by_code == SubtaskAblation.from_version(version)
    assert by_code.version == version
    assert SubtaskAblation.from_code(code.replace(" ", "")) == by_code
    assert SubtaskAblation.from_code([int(c) for c in code.split()]) == by_code
    assert resolve_ablation(code=code, version=version) == by_code


def test_switch_semantics():
    a = SubtaskAblation.from_version("en_incnn_inmlp-de_sa-di_fo_m")
    assert (a.siamese_cnn, a.siamese_mlp) == (False, False)
    assert (a.channel_attention, a.spatial_attention) == (False, True)
    assert (a.first_order, a.second_order, a.mamba) == (True, False, True)
    assert a.code == "2 3 2"
    assert SubtaskAblation.from_version("de_ca").version == "en_sicnn_inmlp-de_ca-di_so_fo_m"
    assert len(ENCODER_VARIANTS) == 3 and len(DECODER_VARIANTS) == 4 and len(DIFFERENCE_VARIANTS) == 5


def test_bad_ablation_inputs():
    with pytest.raises(ValueError, match="valid"):
        SubtaskAblation.from_version("en_sicnn_inmlp-de_xx")
    with pytest.raises(ValueError, match="difference digit 7"):
        SubtaskAblation.from_code("0 0 7")
    with pytest.raises(ValueError, match="3 digits"):
        SubtaskAblation.from_code("0 0")
    with pytest.raises(ValueError, match="twice"):
        SubtaskAblation.from_version("de-de_ca")
    with pytest.raises(ValueError, match="contradicts"):
        resolve_ablation(version="de_ca", code="0 1 0")
    with pytest.raises(ValueError, match="contradicts"):
        resolve_ablation(decoder="de_sa", code="0 1 0")
    with pytest.raises(ValueError, match="core"):
        SubtaskAblation(core="mixed")
