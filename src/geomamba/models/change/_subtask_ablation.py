"""Ablation switches of the subtask-Mamba network: names, version strings and numeric codes.

Three switches follow the author's notes (seed 000, 消融 / 版本命名), plus the SS2D core variant:

==========  ====================  =================================================================
code digit  name                  meaning
==========  ====================  =================================================================
encoder 0   ``en_sicnn_inmlp``    siamese CNN residual, independent MLPs (default)
encoder 1   ``en_sicnn_simlp``    siamese CNN and MLPs (one shared-weight branch)
encoder 2   ``en_incnn_inmlp``    independent CNN and MLPs (two branches)
encoder 3   ``en_sicnn_inmlp``    CNN shared, MLPs independent (the default spelled explicitly)
decoder 0   ``de_ca_sa``          channel- and spatial-attention stages (default)
decoder 1   ``de``                both attentions removed
decoder 2   ``de_ca``             channel attention kept
decoder 3   ``de_sa``             spatial attention kept
diff. 0     ``di_so_fo_m``        second-order + first-order operators + Mamba (default)
diff. 1     ``di_so_fo``          Mamba removed
diff. 2     ``di_fo_m``           first-order + Mamba (second-order removed)
diff. 3     ``di_so_m``           second-order + Mamba (first-order removed)
diff. 4     ``di_m``              only Mamba (no derivative operators)
==========  ====================  =================================================================

A version string joins the three names with ``-`` (``en_sicnn_inmlp-de_ca_sa-di_so_fo_m``; parts may be
left out and then take the default); a numeric code is three digits ``"e d i"`` (``"0 1 0"``,
``"010"``, ``(0, 1, 0)``). ``core`` (``fused`` | ``shared`` | ``separate``) is a separate switch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CORES",
    "DECODER_CODES",
    "DECODER_VARIANTS",
    "DIFFERENCE_CODES",
    "DIFFERENCE_VARIANTS",
    "ENCODER_CODES",
    "ENCODER_VARIANTS",
    "SubtaskAblation",
    "resolve_ablation",
]

# name -> (siamese_cnn, siamese_mlp)
ENCODER_VARIANTS = {
    "en_sicnn_inmlp": (True, False),
    "en_sicnn_simlp": (True, True),
    "en_incnn_inmlp": (False, False),
}
# name -> (channel_attention, spatial_attention)
DECODER_VARIANTS = {
    "de_ca_sa": (True, True),
    "de_ca": (True, False),
    "de_sa": (False, True),
    "de": (False, False),
}
# name -> (second_order, first_order, mamba)
DIFFERENCE_VARIANTS = {
    "di_so_fo_m": (True, True, True),
    "di_so_m": (True, False, True),
    "di_fo_m": (False, True, True),
    "di_m": (False, False, True),
    "di_so_fo": (True, True, False),
}
CORES = ("fused", "shared", "separate")
ENCODER_CODES = {0: "en_sicnn_inmlp", 1: "en_sicnn_simlp", 2: "en_incnn_inmlp", 3: "en_sicnn_inmlp"}
DECODER_CODES = {0: "de_ca_sa", 1: "de", 2: "de_ca", 3: "de_sa"}
DIFFERENCE_CODES = {0: "di_so_fo_m", 1: "di_so_fo", 2: "di_fo_m", 3: "di_so_m", 4: "di_m"}
_GROUPS = (
    ("encoder", "en_", ENCODER_VARIANTS, ENCODER_CODES),
    ("decoder", "de", DECODER_VARIANTS, DECODER_CODES),
    ("difference", "di_", DIFFERENCE_VARIANTS, DIFFERENCE_CODES),
)


def _check(value: str, valid, what: str) -> str:
    if value not in valid:
        raise ValueError(f"unknown {what} variant {value!r}; valid: {', '.join(valid)}")
    return value


@dataclass(frozen=True)
class SubtaskAblation:
    """One ablation setting; the structural switches are derived properties."""

    encoder: str = "en_sicnn_inmlp"
    decoder: str = "de_ca_sa"
    difference: str = "di_so_fo_m"
    core: str = "fused"

    def __post_init__(self) -> None:
        _check(self.encoder, ENCODER_VARIANTS, "encoder")
        _check(self.decoder, DECODER_VARIANTS, "decoder")
        _check(self.difference, DIFFERENCE_VARIANTS, "difference")
        _check(self.core, CORES, "core")

    siamese_cnn = property(lambda self: ENCODER_VARIANTS[self.encoder][0])
    siamese_mlp = property(lambda self: ENCODER_VARIANTS[self.encoder][1])
    channel_attention = property(lambda self: DECODER_VARIANTS[self.decoder][0])
    spatial_attention = property(lambda self: DECODER_VARIANTS[self.decoder][1])
    second_order = property(lambda self: DIFFERENCE_VARIANTS[self.difference][0])
    first_order = property(lambda self: DIFFERENCE_VARIANTS[self.difference][1])
    mamba = property(lambda self: DIFFERENCE_VARIANTS[self.difference][2])

    @property
    def version(self) -> str:
        """``en_..-de_..-di_..`` (the core is not part of the author's version names)."""
        return f"{self.encoder}-{self.decoder}-{self.difference}"

    @property
    def code(self) -> str:
        """The numeric code ``"e d i"`` (the lowest digit that names each variant)."""
        digits = [
            min(k for k, v in codes.items() if v == getattr(self, field)) for field, _, _, codes in _GROUPS
        ]
        return " ".join(map(str, digits))

    @classmethod
    def from_version(cls, version: str, *, core: str = "fused") -> SubtaskAblation:
        """Parse ``en_..-de_..-di_..``; missing parts take the default, each part at most once."""
        found: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in version.split("-"))):
            for field, prefix, variants, _ in _GROUPS:
                if part == prefix.rstrip("_") or part.startswith(prefix):
                    if field in found:
                        raise ValueError(f"version {version!r} names the {field} twice")
                    found[field] = _check(part, variants, field)
                    break
            else:
                valid = [n for _, _, v, _ in _GROUPS for n in v]
                raise ValueError(
                    f"version {version!r}: unknown part {part!r}; valid parts: {', '.join(valid)}"
                )
        if not found:
            raise ValueError(f"version {version!r} names no variant")
        return cls(**found, core=core)

    @classmethod
    def from_code(cls, code: str | Sequence[int], *, core: str = "fused") -> SubtaskAblation:
        """Parse the numeric code ``"e d i"`` (also ``"010"``, ``"0,1,0"`` or a sequence of 3 ints)."""
        if isinstance(code, str):
            digits = [int(c) for c in re.findall(r"\d", code)]
            if re.sub(r"[\d\s,]", "", code):
                raise ValueError(f"ablation code {code!r} may only hold digits, spaces and commas")
        else:
            digits = [int(c) for c in code]
        if len(digits) != 3:
            raise ValueError(f"ablation code {code!r} must have 3 digits (encoder decoder difference)")
        names = {}
        for (field, _, _, codes), digit in zip(_GROUPS, digits):
            if digit not in codes:
                raise ValueError(f"ablation code {code!r}: {field} digit {digit} not in {sorted(codes)}")
            names[field] = codes[digit]
        return cls(**names, core=core)


def resolve_ablation(
    *,
    encoder: str | None = None,
    decoder: str | None = None,
    difference: str | None = None,
    core: str | None = None,
    version: str | None = None,
    code: str | Sequence[int] | None = None,
) -> SubtaskAblation:
    """Combine explicit switches, a version string and a numeric code; a contradiction is a ValueError."""
    if version is not None and code is not None:
        a, b = SubtaskAblation.from_version(version), SubtaskAblation.from_code(code)
        if a != b:
            raise ValueError(f"version {version!r} ({a.version}) contradicts code {code!r} ({b.version})")
    base = SubtaskAblation()
    if version is not None:
        base = SubtaskAblation.from_version(version)
    elif code is not None:
        base = SubtaskAblation.from_code(code)
    explicit = {"encoder": encoder, "decoder": decoder, "difference": difference}
    for field, value in explicit.items():
        if value is not None and (version is not None or code is not None) and value != getattr(base, field):
            raise ValueError(
                f"{field}={value!r} contradicts version/code {version or code!r} ({getattr(base, field)})"
            )
    return SubtaskAblation(
        encoder=encoder or base.encoder,
        decoder=decoder or base.decoder,
        difference=difference or base.difference,
        core=core or "fused",
    )
