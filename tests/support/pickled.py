"""A class of the tests' own: a ``.pt`` file holding an instance can only be read by
unpickling, which steer refuses (``torch.load(weights_only=True)``)."""


class Stowaway:
    """Rides along in a state dict, as a trainer object or a config object does in real files."""
