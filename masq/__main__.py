"""`python3 -m masq`: the same as the installed `masq` launcher."""

import sys

from masq.cli import main

sys.exit(main())
