"""``python -m mosaic`` is the ``mosaic`` command."""

import sys

from mosaic.cli import main

sys.exit(main())
