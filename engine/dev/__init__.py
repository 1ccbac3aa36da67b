"""`flash-tui dev`: serve a project like upstream's `flash run`, redeploying on every save."""
