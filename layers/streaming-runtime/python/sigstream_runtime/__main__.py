"""Entry point used by the exec wrapper: `python -m sigstream_runtime`."""

from sigstream_runtime.bootstrap import main

if __name__ == "__main__":
    main()
