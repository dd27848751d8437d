"""`python -m target_datatile`: the same as the `target-datatile` console script."""

from target_datatile.target import main

main()
