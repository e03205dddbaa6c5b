class ConfigError(ValueError):
    """A configuration value outside what is allowed; carries the key so entry points can
    print one line naming `group.key=value` and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is invalid: allowed {allowed}")
