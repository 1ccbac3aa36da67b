"""A file with a syntax error (the scanner reports it and goes on)."""

from tetra_rp import LiveServerless, remote

cfg = LiveServerless(name="never_seen")


@remote(cfg)
def oops(x: int) -> int
    return x + 1
