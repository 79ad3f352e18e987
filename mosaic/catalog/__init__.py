"""Catalogues as tile reductions: detection, seam merging, photometry, matching, masks, profiles.

Every function here equals its whole-image photutils counterpart on a mosaic small enough to do
both, while no task holds more than a tile and the regions its sources reach.
"""
