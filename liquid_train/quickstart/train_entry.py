"""``python -m liquid_train.quickstart.train_entry --config ... key=value``: the real ``liquid-train`` CLI, with the
quickstart's three model sizes registered first (see ``sizes.py``)."""
import sys

from liquid_train.quickstart.sizes import register_quickstart_sizes

if __name__ == "__main__":
    register_quickstart_sizes()
    from liquid_train.cli import main

    sys.exit(main())
