"""`python -m zhplm` (also what `torchrun -m zhplm` runs)."""

import sys

from zhplm.cli import main

sys.exit(main())
