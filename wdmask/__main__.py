"""``python -m wdmask``: the ``wdmask`` command."""

import sys

from wdmask._cli import main

if __name__ == "__main__":
    sys.exit(main())
