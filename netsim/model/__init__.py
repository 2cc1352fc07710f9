"""The networkx model of a lab and its predictions.  Pure: runs without root."""
from .addressing import ContainerAddr, Plan, mac_for, plan, veth_name
from .predict import HopPrediction, Prediction, StepPrediction, TuplePattern, predict
from .topology import build_graph, path_interfaces

__all__ = ["ContainerAddr", "Plan", "mac_for", "plan", "veth_name", "HopPrediction", "Prediction",
           "StepPrediction", "TuplePattern", "predict", "build_graph", "path_interfaces"]
