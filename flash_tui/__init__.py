"""flash_tui."""
