"""Containers: images (Dockerfiles, content-hash tags, the base image, host pip settings), the Docker
client, and exports to compose, swarm stack and Kubernetes files."""
