"""Model promotion: register versions in the MLflow Model Registry, promote only better ones, roll back."""

from .planner import Decision, ModelPlanner

__all__ = ["Decision", "ModelPlanner"]
