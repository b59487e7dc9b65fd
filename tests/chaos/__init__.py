"""`make chaos`: steady load while services, the broker and Redis are killed; then a verdict."""
