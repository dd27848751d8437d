"""`python -m target_datainsider`: same as the `target-datainsider` command."""

from target_datainsider.target import main

main()
