"""The classifier endpoint (no routes of its own: `/classify` in main.py chains it)."""
