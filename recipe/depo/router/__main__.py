"""``python -m recipe.depo.router serve ...`` runs the live proxy (``recipe.depo.router.serve``);
any other arguments run the offline Table 3 sweep (``recipe.depo.router.offline``)."""

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        from recipe.depo.extras import require

        require("router", "python -m recipe.depo.router serve")
        from recipe.depo.router.serve import main as serve

        return serve(argv[1:])
    from recipe.depo.router.offline import main as offline

    return offline(argv)


if __name__ == "__main__":
    sys.exit(main())
