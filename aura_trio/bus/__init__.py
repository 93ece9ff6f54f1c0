"""Redis from Trio without threads; meant to be the only package importing `redis`, `hiredis`."""
