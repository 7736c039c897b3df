import sys

from recipe.depo.evaluate.cli import main

if __name__ == "__main__":
    sys.exit(main())
