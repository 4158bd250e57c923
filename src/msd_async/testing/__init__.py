"""A faithful local MediaStore-compatible server, for tests and for users' integrations."""
