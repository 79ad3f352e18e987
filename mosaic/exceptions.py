"""Errors and warnings of mosaic.

Errors about input (a file, a key, a value) are :class:`InputError`, a ``ValueError`` whose
message names the file or key and says what was expected; a missing input file is a
:class:`MissingFileError`, which is also a ``FileNotFoundError``. Scientific outcomes that are
not errors (an exposure excluded, no overlap, no detection) are warnings of their own classes,
all subclasses of :class:`MosaicWarning`, so that users can filter them.
"""

__all__ = [
    "InputError",
    "LimitError",
    "MissingFileError",
    "MosaicWarning",
    "DeblendModeWarning",
    "ExposureExcludedWarning",
    "ExtremeValueWarning",
    "UnknownVarianceWarning",
    "FewExposuresWarning",
    "NoDetectionsWarning",
    "NonFiniteDataWarning",
    "NoOverlapWarning",
    "NoWCSWarning",
]


class InputError(ValueError):
    """Bad input: a missing or malformed file, key or value."""


class LimitError(InputError):
    """A run refused before it starts: it would pass a configured limit (grid side, bytes, free
    space), or its inputs would make it so (a broken WCS scale, exposures far from the others)."""


class MissingFileError(InputError, FileNotFoundError):
    """An input file (or folder) that does not exist."""


class MosaicWarning(UserWarning):
    """Base class of mosaic's warnings."""


class ExposureExcludedWarning(MosaicWarning):
    """An exposure was left out (all NaN, all flagged)."""


class ExtremeValueWarning(MosaicWarning):
    """Pixels with values beyond float32's safe range (|x| > 1e30) were left out."""


class UnknownVarianceWarning(MosaicWarning):
    """Pixels with a NaN or infinite VAR_POISSON, VAR_RNOISE or VAR_FLAT were left out (their error is unknown)."""


class NoOverlapWarning(MosaicWarning):
    """An exposure does not touch the output grid and was skipped."""


class FewExposuresWarning(MosaicWarning):
    """Outlier detection on two exposures: each pixel is compared with the lower of the two."""


class NonFiniteDataWarning(MosaicWarning):
    """The image has NaN or inf pixels that no mask covered; they were left out."""


class NoDetectionsWarning(MosaicWarning):
    """No source was found (the catalogue is empty, with all its columns)."""


class DeblendModeWarning(MosaicWarning):
    """Deblending fell back to linear thresholds for some parents (as photutils warns)."""


class NoWCSWarning(MosaicWarning):
    """The image has no celestial WCS: the catalogue's RA/Dec are NaN."""
