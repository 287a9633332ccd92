"""`make deploy-check`: deploy/ run for real under podman, in one bounded run. Builds the image
(no network inside the build), runs a migration in containers with Prometheus scraping, plays
deploy/k8s/ as pods and migrates between them, runs deploy/compose.yaml with podman-compose;
removes every container, pod, volume and image it made (the Debian bases stay, cached) and every
huge page it reserved, and prints one summary line."""
