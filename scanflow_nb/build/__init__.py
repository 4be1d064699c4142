"""Container images and exports: Dockerfiles, content-hash tags, builds, the base image, compose/stack/k8s."""
