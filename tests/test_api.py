import inspect

import tricorn


def test_all_is_sorted_and_complete() -> None:
    assert tricorn.__all__ == sorted(tricorn.__all__)
    public = {
        name for name in dir(tricorn)
        if not name.startswith("_") and not inspect.ismodule(getattr(tricorn, name)) and name != "annotations"
    }
    assert public | {"__version__"} == set(tricorn.__all__)


def test_version_is_a_string() -> None:
    assert isinstance(tricorn.__version__, str) and tricorn.__version__.count(".") == 2
