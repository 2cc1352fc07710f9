"""Engines that run a lab's containers: `own` (netsim's runtime/)."""
