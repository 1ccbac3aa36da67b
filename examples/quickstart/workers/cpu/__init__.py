"""CPU queue-based endpoint: text preprocessing."""
