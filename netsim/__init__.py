"""netsim: real containers on a docker0-style bridge with NAPT, traced packet by packet and
verified against a networkx model."""
__version__ = "0.1.0"
__all__ = ["__version__"]
