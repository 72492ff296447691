"""The no-op RQ job of the baseline."""


def noop(i: int) -> int:
    return i
