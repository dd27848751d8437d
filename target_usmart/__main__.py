"""`python -m target_usmart`: same as the `target-usmart` command."""

from target_usmart.target import main

main()
