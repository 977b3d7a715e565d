"""The worker entry point: `celery -A workers.worker worker` (or `upload-portal worker`)."""
from app.factory import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]
