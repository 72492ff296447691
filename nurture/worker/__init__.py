"""The worker daemon and its RQ jobs: the only package that imports rq."""
