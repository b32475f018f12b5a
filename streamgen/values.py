"""`ConfigValue`: the base of small objects that are their config.

Stop criteria (`sg.StopHead`, ...) and samplers (`sg.samplers.TopK`, ...)
are values: two of one class with equal configs are equal, and
`from_config(get_config())` rebuilds one, as Keras' serialization expects.
Numpy- and TensorFlow-free.
"""


class ConfigValue:
    """Equality, hashing, `repr` and `from_config` from `get_config()`.

    Subclasses define `get_config()` (a dict of hashable values) and take
    its keys as constructor arguments.
    """

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
