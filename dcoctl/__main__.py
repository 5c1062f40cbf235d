"""``python -m dcoctl``: same as the ``dcoctl`` command."""

from .cli import main

main()
