"""The OMERO Upload Portal: the web app (`app.factory.create_app`), its command line, and the light
client (`app.client`). Importing this package loads nothing else: a microscope PC runs the client
without the server's dependencies."""

__version__ = "0.1.0"
