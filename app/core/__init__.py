"""The portal's core, free of Flask: settings, database and models, job states, staging, secrets, the
OMERO boundary, and the services a web app or a worker is built on (app.core.services). The web side
(app/) and the workers (workers/) import it; it imports neither."""
