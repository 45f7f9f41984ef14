"""`make bench`: run every benchmark module, each printing its table and writing JSON.

python -m bench            # all
python -m bench core edge  # some
"""

from __future__ import annotations

import importlib
import sys

MODULES = ("core", "serving", "edge", "outputs", "bulk", "bulk_cloud")


def main(argv: list[str]) -> int:
    failed = []
    for name in argv or MODULES:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            print(f"bench {name}: not available ({exc})")
            continue
        print(f"\n=== bench {name} ===", flush=True)
        if module.main() != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
