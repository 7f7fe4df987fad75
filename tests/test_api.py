import tricorn


def test_all_is_sorted_and_complete() -> None:
    assert tricorn.__all__ == sorted(tricorn.__all__)
    public = {name for name in dir(tricorn) if not name.startswith("_")} - {"annotations", "Any"}
    modules = {"asgi", "cli", "config", "connection", "errors", "h1", "loader", "logs", "sockets", "system",
               "worker", "wsgi"}
    assert public - modules - {"__version__"} == set(tricorn.__all__) - {"__version__"}


def test_version_is_a_string() -> None:
    assert isinstance(tricorn.__version__, str) and tricorn.__version__.count(".") == 2
