"""Each framework's words (version, type names, error messages), one module each."""
