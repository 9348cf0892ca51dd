"""``python -m deploy_res.cli``: the ``deployres`` command."""

from deploy_res.cli import main

main()
