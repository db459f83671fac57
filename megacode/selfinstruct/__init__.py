"""Self-instruct data for the instruct stage (Code Llama §2.5): questions, tests, solutions,
kept only when the tests pass in the sandbox."""
