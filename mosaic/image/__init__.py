"""Image tools on tiles of mosaics far larger than memory: background, noise filters, robust statistics."""
