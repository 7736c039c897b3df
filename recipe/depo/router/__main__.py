"""``python -m recipe.depo.router [offline arguments]``: see ``recipe.depo.router.offline``."""

import sys

from recipe.depo.router.offline import main

if __name__ == "__main__":
    sys.exit(main())
