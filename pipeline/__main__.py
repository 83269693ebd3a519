"""`python -m pipeline` is the `taxifare` command."""

from pipeline.cli import entry

if __name__ == "__main__":
    entry()
