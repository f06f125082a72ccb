"""``python -m steer.cli``: the same as the ``steer`` command."""

from steer.cli import main

main()
