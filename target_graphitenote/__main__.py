"""`python -m target_graphitenote`: same as the `target-graphitenote` command."""

from target_graphitenote.target import main

main()
