"""``python -m beyond_attention`` runs the command line (also under torchrun)."""

import sys

from beyond_attention.cli import main

sys.exit(main())
