import sys

from recipe.depo.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
