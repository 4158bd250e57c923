"""pytest fixtures that start a local MediaStore server (loaded through the pytest11 entry point)."""
