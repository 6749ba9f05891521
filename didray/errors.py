"""The one exception type for bad user input: the CLI prints `report()` and exits with code 2."""


class BadInput(Exception):
    """A sweep file, dataset, results directory or argument that cannot be used as given."""

    def report(self) -> str:
        return f"didray: {self}"
