"""Errors and warnings of mosaic.

Errors about input (a file, a key, a value) are :class:`InputError`, a ``ValueError`` whose
message names the file or key and says what was expected. Scientific outcomes that are not
errors (an exposure excluded, no overlap, no detection) are warnings of their own classes so
that users can filter them.
"""

__all__ = [
    "InputError",
    "MosaicWarning",
    "ExposureExcludedWarning",
    "NoOverlapWarning",
]


class InputError(ValueError):
    """Bad input: a missing or malformed file, key or value."""


class MosaicWarning(UserWarning):
    """Base class of mosaic's warnings."""


class ExposureExcludedWarning(MosaicWarning):
    """An exposure was left out (all NaN, all flagged)."""


class NoOverlapWarning(MosaicWarning):
    """An exposure does not touch the output grid and was skipped."""
