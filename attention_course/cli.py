"""Command line: ``attention-course grade`` and ``attention-course make-exercises``."""


def main() -> int:
    raise SystemExit("not yet")
