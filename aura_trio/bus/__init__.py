"""Redis from Trio without threads: the only package that imports `redis` or `hiredis`."""
