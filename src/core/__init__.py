"""Plumbing every other package uses: paths, params, atomic files, entry-point set-up, determinism, quiet logs."""
