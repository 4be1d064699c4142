"""The run engine and its back ends: local subprocesses, docker containers, swarm services.

`engine.Run` is shared by every back end; a back end only prepares its world and starts attempts
(`backend.Backend`). Nothing heavy is imported here: Docker and MLflow load when a run needs them.
"""
