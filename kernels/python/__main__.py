"""``python -m alum.kernels --check``: see cli.py."""
import sys

from .cli import main

sys.exit(main())
