"""Notebook widgets: the workflow graph, the drift monitor and the labeling panel."""
