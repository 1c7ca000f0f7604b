"""The API's routes, one router per resource: ops (health, readiness, metrics), models, inference (detect,
segment), visualize (drawn detections, compared with ground truth), pages (demo page and API docs)."""
