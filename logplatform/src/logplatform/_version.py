# A source checkout reports this; `make release VERSION=x.y.z` rewrites it in the release build.
__version__ = "0.0.0.dev0"
