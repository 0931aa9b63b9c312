"""The shipped YAML configurations (package data: ``importlib.resources.files("gapless.configs")``)."""
